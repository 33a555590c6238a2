// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Pruners.Attentive;
using Microsoft.ML.Pruning.Pruners.Common;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Tests.Pruners.Attentive
{
    [TestClass]
    public sealed class TopDownAttentionTests
    {
        private const double Tolerance = 1e-6;

        [TestMethod]
        public void ThresholdIsWhereTheRunningSumOfSortedContributionsTurnsPositive()
        {
            using var scope = NewDisposeScope();
            // Sorted rows and running sums:
            // [-2, -1, 0.5, 2, 3]      → -2, -3, -2.5, -0.5, 2.5 → θ = 3
            // [1, 1, 1, 1, 1]          → 1, …                    → θ = 1
            // [-1, 0.2, 0.5, 1, 0]     → -1, -1, -0.8, -0.3, 0.7 → θ = 1
            // [-1, -1, 0.5, 0.5, 0.5]  → -1, -2, -1.5, -1, -0.5  → never positive: +∞
            Tensor s = tensor(new float[,]
            {
                { 3, -1, 2, -2, 0.5f },
                { 1, 1, 1, 1, 1 },
                { -1, 0.2f, 0.5f, 1, 0 },
                { 0.5f, -1, 0.5f, -1, 0.5f },
            });
            float[] theta = ConnectionSelection.Threshold(s).data<float>().ToArray();
            CollectionAssert.AreEqual(new[] { 3f, 1f, 1f, float.PositiveInfinity }, theta);

            // Marked: s ≥ θ − ε and s > 0.
            bool[] marked = ConnectionSelection.Marked(s, ConnectionSelection.Threshold(s), 1e-4).data<bool>().ToArray();
            CollectionAssert.AreEqual(new[]
            {
                true, false, false, false, false,
                true, true, true, true, true,
                false, false, false, true, false,
                false, false, false, false, false,
            }, marked);
        }

        [TestMethod]
        public void LinearPolicyTakesTheFirstSelectingRowThenTheOffset()
        {
            using var scope = NewDisposeScope();
            // mean 10/6, population std √(20/9) ≈ 1.4907: row (1,3) needs 6.14 (none), row (1,2) needs 4.65 (the 5).
            Tensor s = tensor(new float[,] { { 5, 1, 1, 1, 1, 1 } });
            Tensor marked = ones(1, 6, dtype: @bool);
            CollectionAssert.AreEqual(new[] { true, false, false, false, false, false },
                ConnectionSelection.SelectLinear(s, marked, 0).data<bool>().ToArray(), "offset 0: row (1,2)");
            CollectionAssert.AreEqual(new[] { true, false, false, false, false, false },
                ConnectionSelection.SelectLinear(s, marked, 2).data<bool>().ToArray(), "offset 2: row (1,0) needs the mean, 1.67");
            CollectionAssert.AreEqual(new[] { true, true, true, true, true, true },
                ConnectionSelection.SelectLinear(s, marked, 3).data<bool>().ToArray(), "offset 3: row (½,0) needs 0.83");
            // Unmarked inputs are never selected, and mean and std are over the marked ones only.
            Tensor some = tensor(new[,] { { true, true, false, false, false, false } });
            CollectionAssert.AreEqual(new[] { true, false, false, false, false, false },
                ConnectionSelection.SelectLinear(s, some, 0).data<bool>().ToArray(), "mean 3, std 2: row (1,1) needs 5");
        }

        [TestMethod]
        public void ComponentsAreEightConnectedWithinAWindow()
        {
            using var scope = NewDisposeScope();
            // 1 1 0 0 1
            // 0 1 0 0 0
            // 0 0 1 0 0     (2,2) touches (1,1) diagonally: one component with (0,0), (0,1), (1,1), (3,3)
            // 0 0 0 1 0
            // 1 0 0 0 1     (4,4) touches (3,3); (0,4) and (4,0) stand alone
            var grid = new bool[,]
            {
                { true, true, false, false, true },
                { false, true, false, false, false },
                { false, false, true, false, false },
                { false, false, false, true, false },
                { true, false, false, false, true },
            };
            Tensor marked = tensor(grid).unsqueeze(0);
            long[] labels = ConnectionSelection.Components(marked).data<long>().ToArray();
            // The label is the largest 1-based row-major index in the component.
            CollectionAssert.AreEqual(new long[]
            {
                25, 25, 0, 0, 5,
                0, 25, 0, 0, 0,
                0, 0, 25, 0, 0,
                0, 0, 0, 25, 0,
                21, 0, 0, 0, 25,
            }, labels);

            // A snake that needs many propagation steps, and an empty window.
            var snake = new bool[3, 3] { { true, true, true }, { false, false, true }, { true, true, true } };
            Tensor windows = stack(new[] { tensor(snake), zeros(3, 3, dtype: @bool) });
            long[] both = ConnectionSelection.Components(windows).data<long>().ToArray();
            CollectionAssert.AreEqual(new long[] { 9, 9, 9, 0, 0, 9, 9, 9, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0 }, both);
        }

        [TestMethod]
        public void TwoLayerNetworkGatesAsComputedByHand()
        {
            using var scope = NewDisposeScope();
            var definition = new NetworkDefinition
            {
                Architecture = "hand",
                Input = new ImageShape(1, 2, 2),
                Classes = 2,
                Layers = new LayerDefinition[]
                {
                    new FlattenLayer { Name = "flatten" },
                    new LinearLayer { Name = "fc1", InFeatures = 4, OutFeatures = 3 },
                    new ReluLayer { Name = "relu1" },
                    new LinearLayer { Name = "fc2", InFeatures = 3, OutFeatures = 2 },
                },
            };
            using ClassifierNetwork network = ClassifierNetwork.Create(definition);
            Set(network, "fc1.weight", new float[,] { { 1, 0, 0, 0 }, { 0, 1, 0, 0 }, { -1, 0.1f, 1, 1 } });
            Set(network, "fc1.bias", new float[] { 0, 0, 0 });
            Set(network, "fc2.weight", new float[,] { { 1, 1, 1 }, { -1, 1, -1 } });
            Set(network, "fc2.bias", new float[] { 0, 5 });
            var layers = PrunableLayer.Find(network);

            // x = [1, 2, 0.5, 1]; h = relu(W1 x) = [1, 2, 0.7].
            // fc2, label 0: s = [1, 2, 0.7], θ = 0.7, all marked; mean 1.2333, std 0.5558; row (1,1) is the first to select
            // (2 ≥ 1.789), + 3 rows → (⅕,0): all selected. Shares 1/3.7, 2/3.7, 0.7/3.7.
            // fc1: unit 0: s = [1,0,0,0] → input 0; unit 1: s = [0,2,0,0] → input 1;
            //      unit 2: s = [-1, 0.2, 0.5, 1], running sums -1, -0.8, -0.3, 0.7 → θ = 1 → input 3 alone.
            Tensor image = tensor(new float[] { 1, 2, 0.5f, 1 }).view(1, 1, 2, 2);
            using TopDownAttention attention = TopDownAttention.Run(network, layers, image, tensor(new long[] { 0 }), new TopDownSettings(), default);

            double[] fc2Mass = attention.Mass(1).data<double>().ToArray();
            double[] expectedFc2 = { 1 / 3.7, 2 / 3.7, 0.7 / 3.7, 0, 0, 0 };
            for (int i = 0; i < expectedFc2.Length; i++)
                Assert.AreEqual(expectedFc2[i], fc2Mass[i], Tolerance, $"fc2 mass {i}");
            CollectionAssert.AreEqual(new double[] { 1, 1, 1, 0, 0, 0 }, attention.Hits(1).data<double>().ToArray());
            CollectionAssert.AreEqual(new double[] { 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1 }, attention.Mass(0).data<double>().ToArray());
            CollectionAssert.AreEqual(new double[] { 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1 }, attention.Hits(0).data<double>().ToArray());
            // Selected at least once: 3 of fc1's 6 non-zero weights, 3 of fc2's 6.
            Assert.AreEqual(0.5, AttentiveImportance.SelectedFraction(attention, 0, layers[0]), 1e-12);
            Assert.AreEqual(0.5, AttentiveImportance.SelectedFraction(attention, 1, layers[1]), 1e-12);

            // From class 1 instead: s = [-1, 2, -0.7], θ = 2, input 1 alone, then fc1's unit 1 selects input 1.
            using TopDownAttention other = TopDownAttention.Run(network, layers, image, tensor(new long[] { 1 }), new TopDownSettings(), default);
            CollectionAssert.AreEqual(new double[] { 0, 0, 0, 0, 1, 0 }, other.Mass(1).data<double>().ToArray());
            CollectionAssert.AreEqual(new double[] { 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0 }, other.Mass(0).data<double>().ToArray());

            // Inhibition: fc1's unit 2 also selects its only negative contribution, input 0 (magnitude 1), scored against its
            // selected excitation (1): mass 1. fc2's unit 0 has none.
            using TopDownAttention inhibitory = TopDownAttention.Run(network, layers, image, tensor(new long[] { 0 }), new TopDownSettings { Inhibitory = true }, default);
            CollectionAssert.AreEqual(new double[] { 1, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 1 }, inhibitory.Mass(0).data<double>().ToArray());
            CollectionAssert.AreEqual(attention.Mass(1).data<double>().ToArray(), inhibitory.Mass(1).data<double>().ToArray());

            // The prediction (class 1: logits [3.7, 5.3]) gives the same as label 1; two images accumulate.
            using TopDownAttention predicted = TopDownAttention.Run(network, layers, cat(new[] { image, image }), null,
                new TopDownSettings { FromPrediction = true }, default);
            CollectionAssert.AreEqual(new double[] { 0, 0, 0, 0, 2, 0 }, predicted.Mass(1).data<double>().ToArray());
            CollectionAssert.AreEqual(new double[] { 0, 0, 0, 0, 2, 0 }, predicted.Hits(1).data<double>().ToArray());

            // Mass times |w| (with fc1's first weight tripled after the pass): 3, 1 and 1 for the selected connections;
            // connections never selected keep only the |w| tie-break (below 10⁻⁶ of the smallest positive score); zero
            // weights rank below every other.
            Set(network, "fc1.weight", new float[,] { { 3, 0, 0, 0 }, { 0, 1, 0, 0 }, { -1, 0.1f, 1, 1 } });
            using Tensor product = AttentiveImportance.Scores(attention, 0, layers[0], Microsoft.ML.Pruning.Pruners.AttentionScore.MassMagnitude, relative: false);
            double[] scores = product.data<double>().ToArray();
            Assert.AreEqual(3, scores[0], 1e-5);
            Assert.AreEqual(1, scores[5], 1e-5);
            Assert.AreEqual(1, scores[11], 1e-5);
            foreach (int never in new[] { 8, 9, 10 })
                Assert.IsTrue(scores[never] > 0 && scores[never] < 1e-5, $"connection {never}: {scores[never]}");
            Assert.IsTrue(scores[8] > scores[9], "among the connections never selected, the larger weight ranks first");
            foreach (int zero in new[] { 1, 2, 3, 4, 6, 7 })
                Assert.AreEqual(-1, scores[zero], $"zero weight {zero}");

            // Boosted magnitude, |w|·(1 + mass / m̄), m̄ the mean over the 6 non-zero weights (3/6; the 6 zero weights, pruned,
            // do not count): 9, 3 and 3 for the selected connections; those never selected keep |w| (1, 0.1, 1), so a large
            // unselected weight can outrank a small selected one.
            using Tensor boosted = AttentiveImportance.Scores(attention, 0, layers[0], Microsoft.ML.Pruning.Pruners.AttentionScore.BoostedMagnitude, relative: false);
            double[] boost = boosted.data<double>().ToArray();
            double[] expectedBoost = { 9, -1, -1, -1, -1, 3, -1, -1, 1, 0.1, 1, 3 };
            for (int i = 0; i < expectedBoost.Length; i++)
                Assert.AreEqual(expectedBoost[i], boost[i], 1e-5, $"boosted score {i}");
        }

        [TestMethod]
        public void ConvolutionKeepsTheBestComponentOverInputChannels()
        {
            using var scope = NewDisposeScope();
            var definition = new NetworkDefinition
            {
                Architecture = "hand",
                Input = new ImageShape(2, 3, 3),
                Classes = 2,
                Layers = new LayerDefinition[]
                {
                    new Conv2dLayer { Name = "conv1", InChannels = 2, OutChannels = 1, KernelSize = 3 },
                    new ReluLayer { Name = "relu1" },
                    new FlattenLayer { Name = "flatten" },
                    new LinearLayer { Name = "fc1", InFeatures = 1, OutFeatures = 2 },
                },
            };
            using ClassifierNetwork network = ClassifierNetwork.Create(definition);
            // With an image of ones the contributions are the weights. Channel 0: 3 at (0,0), 2.5 at (2,2); channel 1: −4 at
            // (0,0), 2.6 at (1,1) and (2,2). Sum 6.7; sorted running sums −4, …, −4, −1.5, 1.1 → θ = 2.6: marked are channel 0's
            // 3 and channel 1's two 2.6, which touch diagonally. Scores: 0.2·3 + 0.8·1 = 1.4 against 0.2·5.2 + 0.8·2 = 2.64.
            var weight = new float[1, 2, 3, 3];
            weight[0, 0, 0, 0] = 3;
            weight[0, 0, 2, 2] = 2.5f;
            weight[0, 1, 0, 0] = -4;
            weight[0, 1, 1, 1] = 2.6f;
            weight[0, 1, 2, 2] = 2.6f;
            Set(network, "conv1.weight", weight);
            Set(network, "conv1.bias", new float[] { 0 });
            Set(network, "fc1.weight", new float[,] { { 1 }, { -1 } });
            Set(network, "fc1.bias", new float[] { 0, 0 });
            var layers = PrunableLayer.Find(network);

            using TopDownAttention attention = TopDownAttention.Run(network, layers, ones(1, 2, 3, 3), tensor(new long[] { 0 }), new TopDownSettings(), default);
            double[] mass = attention.Mass(0).data<double>().ToArray();
            double[] expected = new double[18];
            expected[9 + 4] = 0.5;
            expected[9 + 8] = 0.5;
            CollectionAssert.AreEqual(expected, mass);
            CollectionAssert.AreEqual(expected.Select(m => m > 0 ? 1.0 : 0).ToArray(), attention.Hits(0).data<double>().ToArray());
            CollectionAssert.AreEqual(new double[] { 1, 0 }, attention.Mass(1).data<double>().ToArray());
        }

        [TestMethod]
        public void EveryLayerOfTheVggAndResNetReceivesAttention()
        {
            using var scope = NewDisposeScope();
            foreach (var (architecture, width) in new[] { (ImageClassifierArchitecture.VggSmall, 0.25), (ImageClassifierArchitecture.ResNet20, 0.5) })
            {
                torch.manual_seed(3);
                using ClassifierNetwork network = ClassifierNetwork.Create(Architectures.Create(architecture, new ImageShape(1, 16, 16), 4, width: width));
                var layers = PrunableLayer.Find(network);
                Tensor images = rand(6, 1, 16, 16);
                using TopDownAttention attention = TopDownAttention.Run(network, layers, images, null, new TopDownSettings { FromPrediction = true }, default);
                // Every image's gating starts as 1 at one output unit, whose selected shares sum to 1 (unless its contributions
                // sum to no more than the lower bound, which random weights allow).
                double top = attention.Mass(layers.Count - 1).sum().item<double>();
                Assert.AreEqual(Math.Round(top), top, 1e-6, architecture.ToString());
                Assert.IsGreaterThanOrEqualTo(4, top, architecture.ToString());
                foreach (var (layer, i) in layers.Select((l, i) => (l, i)))
                {
                    Assert.IsGreaterThan(0, attention.Hits(i).sum().item<double>(), $"{architecture} {layer.Path} was never selected");
                    Assert.IsGreaterThanOrEqualTo(0, attention.Mass(i).min().item<double>());
                }
            }
        }

        [TestMethod]
        public void ShiftLayersAreNamedAsUnsupported()
        {
            NetworkDefinition shift = Architectures.Create(ImageClassifierArchitecture.VggSmall, new ImageShape(1, 16, 16), 4, convolution: ConvolutionKind.Shift);
            var ex = Assert.ThrowsExactly<NotSupportedException>(() => TopDownAttention.CheckSupported(shift));
            StringAssert.Contains(ex.Message, "layer 'conv2' (ShiftConv2dLayer)");
        }

        private static void Set(ClassifierNetwork network, string name, Array values)
        {
            var parameter = network.NamedParameters().Single(p => p.Name == name).Parameter;
            using var noGrad = no_grad();
            float[] flat = values.Cast<float>().ToArray();
            parameter.copy_(tensor(flat).view(parameter.shape));
        }
    }
}
