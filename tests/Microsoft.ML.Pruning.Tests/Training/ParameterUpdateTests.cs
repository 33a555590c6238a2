// Licensed under the MIT license.

using System;
using System.Linq;
using Microsoft.ML.Pruning.Training;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Tests.Training
{
    [TestClass]
    public sealed class ParameterUpdateTests
    {
        /// <summary>Two identical sets of parameters, a weight and a bias, plus one that takes no part in the loss.</summary>
        private static Parameter[] MakeParameters()
        {
            var generator = new Generator(11);
            return new[]
            {
                new Parameter(randn(new long[] { 5, 4 }, generator: generator)),
                new Parameter(randn(new long[] { 5 }, generator: generator)),
                new Parameter(randn(new long[] { 3 }, generator: generator)),
            };
        }

        /// <summary>A loss of the first two parameters on a fixed batch, changing with the step.</summary>
        private static void Backward(Parameter[] parameters, int step)
        {
            using var scope = NewDisposeScope();
            var generator = new Generator((ulong)(100 + step));
            Tensor input = randn(new long[] { 8, 4 }, generator: generator);
            Tensor output = nn.functional.linear(input, parameters[0], parameters[1]);
            output.tanh().square().sum().backward();
        }

        private static void AssertSameBits(Parameter[] expected, Parameter[] actual, string what)
        {
            for (int i = 0; i < expected.Length; i++)
            {
                CollectionAssert.AreEqual(expected[i].data<float>().ToArray(), actual[i].data<float>().ToArray(), $"{what}: parameter {i}");
            }
        }

        /// <summary>Six steps of both optimizers on the same losses, the learning rate changing, parameters compared after each.</summary>
        private static void StepTogether(optim.Optimizer torchSharp, Parameter[] reference, ParameterUpdate update, Parameter[] ours, Func<int, double> rate)
        {
            for (int step = 0; step < 6; step++)
            {
                foreach (var group in torchSharp.ParamGroups)
                    group.LearningRate = rate(step);
                torchSharp.zero_grad();
                update.ZeroGrad();
                Backward(reference, step);
                Backward(ours, step);
                torchSharp.step();
                update.Step(rate(step));
                AssertSameBits(reference, ours, $"step {step}");
            }
        }

        [TestMethod]
        [DataRow(0.9, 5e-4, true)]
        [DataRow(0.9, 0.0, false)]
        [DataRow(0.0, 1e-4, false)]
        public void SgdGivesTorchSharpsParametersBitForBit(double momentum, double weightDecay, bool nesterov)
        {
            Parameter[] reference = MakeParameters(), ours = MakeParameters();
            using var torchSharp = optim.SGD(reference, 0.1, momentum, 0, weightDecay, nesterov);
            using ParameterUpdate update = ParameterUpdate.Create(OptimizerKind.Sgd, ours, momentum, weightDecay, nesterov);
            StepTogether(torchSharp, reference, update, ours, step => 0.1 / (step + 1));
            Assert.IsNull(ours[2].grad, "a parameter outside the loss gets no gradient");
        }

        [TestMethod]
        [DataRow(0.0)]
        [DataRow(1e-3)]
        public void AdamGivesTorchSharpsParametersBitForBit(double weightDecay)
        {
            Parameter[] reference = MakeParameters(), ours = MakeParameters();
            using var torchSharp = optim.Adam(reference, 0.01, weight_decay: weightDecay);
            using ParameterUpdate update = ParameterUpdate.Create(OptimizerKind.Adam, ours, momentum: 0.9, weightDecay, nesterov: false);
            StepTogether(torchSharp, reference, update, ours, step => 0.01 * (1 + step % 2));
        }

        [TestMethod]
        public void UpdatesHoldEveryScalarThroughGarbageCollections()
        {
            // Collections and finalizers forced between steps: the update's scalars are its own, alive until disposed.
            Parameter[] parameters = MakeParameters();
            using ParameterUpdate update = ParameterUpdate.Create(OptimizerKind.Sgd, parameters, 0.9, 5e-4, nesterov: true);
            for (int step = 0; step < 20; step++)
            {
                update.ZeroGrad();
                Backward(parameters, step);
                GC.Collect();
                GC.WaitForPendingFinalizers();
                update.Step(0.05);
            }
            Assert.IsTrue(parameters.Take(2).All(p => p.isfinite().all().item<bool>()));
        }

        [TestMethod]
        public void InvalidSettingsAreNamed()
        {
            Parameter[] parameters = MakeParameters();
            var negative = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ParameterUpdate.Create(OptimizerKind.Sgd, parameters, -0.1, 0, false));
            StringAssert.Contains(negative.Message, "Momentum");
            var nesterov = Assert.ThrowsExactly<ArgumentException>(() => ParameterUpdate.Create(OptimizerKind.Sgd, parameters, 0, 0, true));
            StringAssert.Contains(nesterov.Message, "Nesterov");
        }
    }
}
