// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML.Pruning.Native;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Pruners.SynapticStrength
{
    /// <summary>
    /// The re-parametrization of Synaptic Strength (Lin et al., NeurIPS 2018), as the method notes read it: the batch-norm
    /// scale γ of the layer that produces a convolution's input is folded away into the kernels that read it, and every
    /// kernel of the pruned convolutions is written as <c>K[o,i] = s[o,i] · K̂[o,i]</c> with <c>‖K̂[o,i]‖_F = 1</c> and a
    /// learnable strength <c>s[o,i] ≥ 0</c>, initialized from the trained model as <c>|γ_i| · ‖K[o,i]‖_F</c>.
    /// </summary>
    /// <remarks>
    /// <para>Folding: with a batch norm, then only positively homogeneous layers (ReLU, max or average pooling, flatten)
    /// between a producer and its consumers, <c>relu(γ·x̂ + β) = |γ| · relu(sign(γ)·x̂ + β/|γ|)</c>; so γ becomes sign(γ) and
    /// is frozen during sparsity training, β becomes β/|γ|, and every consumer's weights reading the channel (a
    /// convolution's kernels, a fully connected layer's block after a flatten) are multiplied by |γ|. The network computes
    /// the same function. Channels that cross a residual sum keep their γ (the shortcut is not homogeneous in it).</para>
    /// <para>Training: the network keeps its ordinary weight tensors, which always hold <c>s · K̂</c>. The strengths and the
    /// unit directions are extra parameters of the training loop; after the backward pass, the weight's gradient is
    /// carried to them through <c>W = s · V / ‖V‖</c> by autograd, the penalty's subgradient <c>λ · sign(s)</c> is added
    /// to the strengths' gradient, and after each optimizer step the strengths are projected to <c>s ≥ 0</c> (so that
    /// weak connections reach exactly 0), the directions back to unit norm, and the weights rewritten.</para>
    /// </remarks>
    internal sealed class SynapticStrengthParametrization : IDisposable
    {
        private static readonly Scalar s_zero = 0.0.ToScalar(), s_tiny = 1e-12.ToScalar();

        private readonly List<Connection> _layers = new();
        private readonly List<Folding> _foldings = new();

        private SynapticStrengthParametrization()
        {
        }

        /// <summary>The strengths and directions, trained with the network's parameters.</summary>
        public IReadOnlyList<TorchSharp.Modules.Parameter> Parameters => _layers.SelectMany(l => new[] { l.Strength, l.Direction }).ToArray();

        /// <summary>Folds the batch-norm scales of <paramref name="network"/> and writes the kernels of <paramref name="layers"/>
        /// (paths of Conv2d layers) as strength times unit direction.</summary>
        public static SynapticStrengthParametrization Create(ClassifierNetwork network, IReadOnlyCollection<string> layers)
        {
            var result = new SynapticStrengthParametrization();
            try
            {
                result._foldings.AddRange(FoldBatchNormScales(network));
                foreach (Folding folding in result._foldings)
                    folding.Gamma.requires_grad = false;
                var parameters = network.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter, StringComparer.Ordinal);
                foreach (string path in layers)
                {
                    TorchSharp.Modules.Parameter weight = parameters[path + ".weight"];
                    using var scope = NewDisposeScope();
                    using var noGrad = no_grad();
                    Tensor norms = weight.square().sum(new long[] { 2, 3 }, keepdim: true).sqrt();
                    long taps = weight.shape[2] * weight.shape[3];
                    // A kernel that is all zero gets strength 0 and a uniform direction.
                    using Scalar uniform = (1 / Math.Sqrt(taps)).ToScalar();
                    Tensor direction = where(norms.gt(HeldScalars.Of(0)), weight / norms.clamp_min(HeldScalars.Of(1e-30)), full_like(weight, uniform));
                    var strength = new TorchSharp.Modules.Parameter(norms.squeeze(-1).squeeze(-1).clone().DetachFromDisposeScope());
                    var unit = new TorchSharp.Modules.Parameter(direction.clone().DetachFromDisposeScope());
                    result._layers.Add(new Connection(path, weight, strength, unit));
                    weight.copy_(strength.unsqueeze(-1).unsqueeze(-1) * unit);
                }
                return result;
            }
            catch
            {
                result.Dispose();
                throw;
            }
        }

        /// <summary>The training hooks of sparsity training with penalty <c>λ · Σ s</c>.</summary>
        public TrainingHooks Hooks(ClassifierNetwork network, double lambda, string phase)
        {
            var graphs = new Tensor?[_layers.Count];
            // Held by the hooks for every step's native calls (TorchSharp frees a temporary scalar only in its finalizer,
            // which may run during the call that reads it; see ParameterUpdate).
            Scalar penalty = lambda.ToScalar();
            return new TrainingHooks
            {
                Phase = phase,
                ExtraParameters = Parameters,
                Forward = images =>
                {
                    // W = s · V / ‖V‖ as a graph of the strengths and directions (its values are the weights').
                    for (int l = 0; l < _layers.Count; l++)
                    {
                        Connection c = _layers[l];
                        graphs[l] = c.Strength.unsqueeze(-1).unsqueeze(-1) * c.Direction / c.Direction.square().sum(new long[] { 2, 3 }, keepdim: true).sqrt();
                    }
                    return network.Forward(images);
                },
                AfterBackward = () =>
                {
                    for (int l = 0; l < _layers.Count; l++)
                    {
                        Connection c = _layers[l];
                        if (graphs[l] is not Tensor graph || c.Weight.grad is not Tensor gradient)
                            continue;
                        graph.backward(new[] { gradient.clone() });
                        using (no_grad())
                        {
                            c.Strength.grad?.add_(c.Strength.sign(), penalty);
                            gradient.zero_();
                        }
                        graphs[l] = null;
                    }
                },
                AfterStep = (_, _) => Project(),
                DescribeEpoch = _ => FormattableString.Invariant($"strengths at zero {ZeroFraction():P1}"),
            };
        }

        /// <summary>The fraction of strengths that are exactly 0.</summary>
        public double ZeroFraction()
        {
            using var scope = NewDisposeScope();
            long zero = 0, all = 0;
            foreach (Connection c in _layers)
            {
                zero += c.Strength.eq(HeldScalars.Of(0)).sum().item<long>();
                all += c.Strength.numel();
            }
            return all == 0 ? 0 : (double)zero / all;
        }

        /// <summary>Strengths to s ≥ 0, directions to unit norm, weights to s · K̂.</summary>
        private void Project()
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            foreach (Connection c in _layers)
            {
                c.Strength.clamp_min_(s_zero);
                Tensor norms = c.Direction.square().sum(new long[] { 2, 3 }, keepdim: true).sqrt();
                c.Direction.div_(norms.clamp_min(s_tiny));
                c.Weight.copy_(c.Strength.unsqueeze(-1).unsqueeze(-1) * c.Direction);
            }
        }

        /// <summary>
        /// Folds every foldable batch-norm scale into the layers that read its channels (see the remarks of the class) and
        /// returns what was folded (the scales, now ±1, and the magnitudes taken out), so that <see cref="Dispose"/> can
        /// undo it. The network computes the same function.
        /// </summary>
        internal static List<Folding> FoldBatchNormScales(ClassifierNetwork network)
        {
            var parameters = network.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter, StringComparer.Ordinal);
            var folded = new List<Folding>();
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            foreach (ChannelGroup group in ChannelGroups.Find(network.Definition))
            {
                var norms = group.BatchNorms.ToList();
                if (!group.Prunable || group.IsResidual || norms.Count != 1 || group.Producers.Count() != 1
                    || !group.Consumers.Any() || !group.Consumers.All(c => c.Layer is Conv2dLayer or LinearLayer))
                {
                    continue;
                }
                TorchSharp.Modules.Parameter gamma = parameters[norms[0].Path + ".weight"], beta = parameters[norms[0].Path + ".bias"];
                Tensor magnitude = gamma.abs();
                Tensor foldable = magnitude.gt(HeldScalars.Of(1e-12));
                Tensor scale = where(foldable, magnitude, ones_like(magnitude));
                beta.div_(scale);
                gamma.copy_(where(foldable, gamma.sign(), gamma));
                var consumers = group.Consumers.Select(c => (parameters[c.Path + ".weight"], c.BlockSize)).ToArray();
                foreach (var (weight, blockSize) in consumers)
                    weight.mul_(Columns(scale, blockSize, weight));
                folded.Add(new Folding(gamma, beta, scale.clone().DetachFromDisposeScope(), consumers));
            }
            network.ResetCompiledForm();
            return folded;
        }

        /// <summary>
        /// Returns the network to its ordinary parametrization — each folded batch-norm scale γ back in its batch norm
        /// (<c>γ·|γ₀|</c>, <c>β·|γ₀|</c>) and out of the kernels that read its channels (divided by <c>|γ₀|</c>), which
        /// computes the same function — gives the scales back to training, and releases the strengths and directions.
        /// Fine-tuning then trains the network as it was trained before, not in the re-parametrized form.
        /// </summary>
        public void Dispose()
        {
            using (NewDisposeScope())
            using (no_grad())
            {
                foreach (Folding folding in _foldings)
                {
                    if (!folding.Gamma.IsInvalid)
                    {
                        folding.Gamma.mul_(folding.Scale);
                        folding.Beta.mul_(folding.Scale);
                        foreach (var (weight, blockSize) in folding.Consumers)
                            weight.div_(Columns(folding.Scale, blockSize, weight));
                        folding.Gamma.requires_grad = true;
                    }
                    folding.Scale.Dispose();
                }
            }
            _foldings.Clear();
            foreach (Connection c in _layers)
            {
                c.Strength.Dispose();
                c.Direction.Dispose();
            }
            _layers.Clear();
        }

        /// <summary>Per-input-channel factors in the shape of <paramref name="weight"/>'s dimension 1 (a block of
        /// <paramref name="blockSize"/> columns per channel for a fully connected layer after a flatten).</summary>
        private static Tensor Columns(Tensor scale, int blockSize, Tensor weight)
        {
            Tensor columns = blockSize > 1 ? scale.repeat_interleave(blockSize) : scale;
            long[] shape = Enumerable.Repeat(1L, (int)weight.dim()).ToArray();
            shape[1] = -1;
            return columns.view(shape);
        }

        /// <summary>One folded batch norm: its γ and β, the magnitudes |γ₀| taken out, and the consumers' weights that took them in.</summary>
        internal sealed record Folding(TorchSharp.Modules.Parameter Gamma, TorchSharp.Modules.Parameter Beta, Tensor Scale,
            (TorchSharp.Modules.Parameter Weight, int BlockSize)[] Consumers);

        private sealed record Connection(string Path, TorchSharp.Modules.Parameter Weight, TorchSharp.Modules.Parameter Strength, TorchSharp.Modules.Parameter Direction);
    }
}
