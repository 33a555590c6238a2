// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Linq;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Training
{
    /// <summary>
    /// The optimizer step of the library's training loops: SGD (momentum, Nesterov, weight decay) and Adam, with the
    /// arithmetic of TorchSharp's <c>optim.SGD</c> and <c>optim.Adam</c>, op for op, so that the same gradients give the
    /// same parameters bit for bit.
    /// </summary>
    /// <remarks>
    /// Why the library does not call TorchSharp's optimizers: in TorchSharp 0.107 a <see cref="Scalar"/> made from a
    /// <see cref="double"/> (every <c>alpha:</c> of their updates) is released only by its finalizer, and the tensor methods do
    /// not keep it alive during the native call that reads it. When a garbage collection and the finalizer thread fall into
    /// that call, libtorch reads a freed scalar and the step fails with "Expected false to be true" from
    /// <c>c10::Scalar::toFloat</c> (seen in a sparsity training of the small VGG) or, worse, reads
    /// another value. Here every scalar of a step is created, held and disposed explicitly.
    /// </remarks>
    internal abstract class ParameterUpdate : IDisposable
    {
        private readonly List<Scalar> _constants = new();

        protected ParameterUpdate(IEnumerable<Parameter> parameters)
        {
            Parameters = parameters.ToArray();
        }

        /// <summary>The parameters updated.</summary>
        protected IReadOnlyList<Parameter> Parameters { get; }

        /// <summary>A scalar that lives as long as this object.</summary>
        protected Scalar Constant(double value)
        {
            var scalar = value.ToScalar();
            _constants.Add(scalar);
            return scalar;
        }

        /// <summary>SGD or Adam over <paramref name="parameters"/>.</summary>
        public static ParameterUpdate Create(OptimizerKind kind, IEnumerable<Parameter> parameters, double momentum, double weightDecay, bool nesterov)
            => kind switch
            {
                OptimizerKind.Sgd => new SgdUpdate(parameters, momentum, weightDecay, nesterov),
                OptimizerKind.Adam => new AdamUpdate(parameters, weightDecay),
                _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "Unknown optimizer."),
            };

        /// <summary>Clears every parameter's gradient.</summary>
        public void ZeroGrad()
        {
            foreach (Parameter parameter in Parameters)
            {
                using Tensor? grad = parameter.grad;
                grad?.zero_();
            }
        }

        /// <summary>One update with learning rate <paramref name="learningRate"/>; parameters without a gradient are left alone.</summary>
        public void Step(double learningRate)
        {
            using var noGrad = no_grad();
            using var scope = NewDisposeScope();
            using Scalar negativeRate = (-learningRate).ToScalar();
            foreach (Parameter parameter in Parameters)
            {
                Tensor? grad = parameter.grad;
                if (grad is not null)
                    Update(parameter, grad, learningRate, negativeRate);
            }
        }

        /// <summary>Updates one parameter from its gradient (inside a no-grad dispose scope).</summary>
        protected abstract void Update(Parameter parameter, Tensor grad, double learningRate, Scalar negativeRate);

        /// <inheritdoc/>
        public void Dispose()
        {
            DisposeState();
            foreach (Scalar scalar in _constants)
                scalar.Dispose();
            _constants.Clear();
        }

        /// <summary>Releases the optimizer's state tensors.</summary>
        protected abstract void DisposeState();
    }

    /// <summary>SGD as TorchSharp's <c>optim.SGD</c> computes it (dampening 0, not maximizing).</summary>
    internal sealed class SgdUpdate : ParameterUpdate
    {
        private readonly bool _momentum, _weightDecay, _nesterov;
        private readonly Scalar _momentumValue, _weightDecayValue, _one;
        private readonly Dictionary<Parameter, Tensor> _buffers = new(ReferenceEqualityComparer.Instance);

        public SgdUpdate(IEnumerable<Parameter> parameters, double momentum, double weightDecay, bool nesterov)
            : base(parameters)
        {
            if (momentum < 0 || weightDecay < 0)
                throw new ArgumentOutOfRangeException(nameof(momentum), "Momentum and weight decay must be zero or positive.");
            if (nesterov && momentum <= 0)
                throw new ArgumentException("Nesterov momentum needs a positive momentum.", nameof(nesterov));
            _momentum = momentum != 0;
            _weightDecay = weightDecay != 0;
            _nesterov = nesterov;
            _momentumValue = Constant(momentum);
            _weightDecayValue = Constant(weightDecay);
            _one = Constant(1.0);
        }

        protected override void Update(Parameter parameter, Tensor grad, double learningRate, Scalar negativeRate)
        {
            if (_weightDecay)
                grad = grad.add(parameter, _weightDecayValue);
            if (_momentum)
            {
                if (_buffers.TryGetValue(parameter, out Tensor? buffer))
                {
                    buffer.mul_(_momentumValue).add_(grad, _one);
                }
                else
                {
                    buffer = grad.clone().detach().DetachFromDisposeScope();
                    _buffers[parameter] = buffer;
                }
                grad = _nesterov ? grad.add(buffer, _momentumValue) : buffer;
            }
            parameter.add_(grad, negativeRate);
        }

        protected override void DisposeState()
        {
            foreach (Tensor buffer in _buffers.Values)
                buffer.Dispose();
            _buffers.Clear();
        }
    }

    /// <summary>Adam as TorchSharp's <c>optim.Adam</c> computes it (β = 0.9, 0.999, ε = 1e-8, no AMSGrad, not maximizing).</summary>
    internal sealed class AdamUpdate : ParameterUpdate
    {
        private const double Beta1 = 0.9, Beta2 = 0.999, Epsilon = 1e-8;

        private readonly bool _weightDecay;
        private readonly Scalar _weightDecayValue, _beta1, _beta2, _oneMinusBeta1, _oneMinusBeta2, _epsilon;
        private readonly Dictionary<Parameter, State> _state = new(ReferenceEqualityComparer.Instance);

        public AdamUpdate(IEnumerable<Parameter> parameters, double weightDecay)
            : base(parameters)
        {
            if (weightDecay < 0)
                throw new ArgumentOutOfRangeException(nameof(weightDecay), "Weight decay must be zero or positive.");
            _weightDecay = weightDecay != 0;
            _weightDecayValue = Constant(weightDecay);
            _beta1 = Constant(Beta1);
            _beta2 = Constant(Beta2);
            _oneMinusBeta1 = Constant(1 - Beta1);
            _oneMinusBeta2 = Constant(1 - Beta2);
            _epsilon = Constant(Epsilon);
            foreach (Parameter parameter in Parameters)
                _state[parameter] = new State(zeros_like(parameter).DetachFromDisposeScope(), zeros_like(parameter).DetachFromDisposeScope());
        }

        protected override void Update(Parameter parameter, Tensor grad, double learningRate, Scalar negativeRate)
        {
            State state = _state[parameter];
            state.Steps++;
            double correction1 = 1 - Math.Pow(Beta1, state.Steps), correction2 = 1 - Math.Pow(Beta2, state.Steps);
            if (_weightDecay)
                grad = grad.add(parameter, _weightDecayValue);
            state.Average.mul_(_beta1).add_(grad, _oneMinusBeta1);
            state.SquareAverage.mul_(_beta2).addcmul_(grad, grad.conj(), _oneMinusBeta2);
            using Scalar root = Math.Sqrt(correction2).ToScalar();
            using Scalar stepSize = (-(learningRate / correction1)).ToScalar();
            Tensor denominator = state.SquareAverage.sqrt().div(root).add_(_epsilon);
            parameter.addcdiv_(state.Average, denominator, stepSize);
        }

        /// <summary>Adam's running averages of one parameter and the number of steps it took.</summary>
        private sealed class State(Tensor average, Tensor squareAverage)
        {
            public Tensor Average { get; } = average;

            public Tensor SquareAverage { get; } = squareAverage;

            public long Steps { get; set; }
        }

        protected override void DisposeState()
        {
            foreach (State state in _state.Values)
            {
                state.Average.Dispose();
                state.SquareAverage.Dispose();
            }
            _state.Clear();
        }
    }
}
