// Licensed under the MIT license.

using System;
using System.Linq;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Networks.Layers;
using Microsoft.ML.Pruning.Pruners;
using Microsoft.ML.Pruning.Pruners.ShiftAttention;
using Microsoft.ML.Pruning.Runtime;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Tests.Networks
{
    /// <summary>
    /// The library's convolutions against a reference that does not go through oneDNN (libtorch's double-precision
    /// convolution), at the channel counts where libtorch's single-precision CPU convolution is wrong.
    /// </summary>
    [TestClass]
    public sealed class ConvolutionTests
    {
        [TestMethod]
        [DataRow(24, 24, 3, 1, 1, 28)]
        [DataRow(43, 43, 3, 1, 1, 28)]
        [DataRow(136, 24, 3, 1, 1, 7)]
        [DataRow(20, 24, 5, 2, 8, 14)]
        [DataRow(43, 1, 3, 1, 8, 14)]
        [DataRow(43, 24, 1, 1, 8, 14)]
        public void ConvolutionEqualsUnfoldTimesWeights(int inChannels, int outChannels, int kernelSize, int stride, int batch, int size)
            => AssertConvolutionAndGradientsMatch(inChannels, outChannels, kernelSize, stride, batch, size);

        [TestMethod]
        [DataRow(1)]
        [DataRow(2)]
        public void EveryChannelCountAndStrideConvolvesAndDifferentiatesRight(int threads)
        {
            int before = torch.get_num_threads();
            torch.set_num_threads(threads);
            try
            {
                var failures = new System.Collections.Generic.List<string>();
                foreach (int stride in new[] { 1, 2 })
                    foreach (int inChannels in new[] { 1, 16, 17, 24, 32, 43, 48, 64, 80, 86 })
                        foreach (int outChannels in new[] { 1, 6, 16, 24, 32, 43, 48 })
                        {
                            try
                            {
                                AssertConvolutionAndGradientsMatch(inChannels, outChannels, 3, stride, 4, 14);
                            }
                            catch (AssertFailedException ex)
                            {
                                failures.Add(ex.Message);
                            }
                        }
                Assert.IsEmpty(failures, string.Join(Environment.NewLine, failures));
            }
            finally
            {
                torch.set_num_threads(before);
            }
        }

        private static void AssertConvolutionAndGradientsMatch(int inChannels, int outChannels, int kernelSize, int stride, int batch, int size)
        {
            string what = $"{inChannels}->{outChannels}, {kernelSize}x{kernelSize}, stride {stride}, batch {batch}, {size}x{size}";
            torch.random.manual_seed(2);
            using var scope = NewDisposeScope();
            Tensor input = randn(batch, inChannels, size, size).requires_grad_(true);
            Tensor weight = randn(outChannels, inChannels, kernelSize, kernelSize).requires_grad_(true);
            Tensor bias = randn(outChannels).requires_grad_(true);
            long padding = kernelSize / 2;

            Tensor output = Convolution.Conv2d(input, weight, bias, new long[] { stride, stride }, new long[] { padding, padding });
            // The reference: libtorch's own double-precision convolution, which does not go through oneDNN.
            Tensor input64 = input.to_type(ScalarType.Float64), weight64 = weight.to_type(ScalarType.Float64), bias64 = bias.to_type(ScalarType.Float64);
            Tensor expected = nn.functional.conv2d(input64, weight64, bias64, new long[] { stride, stride }, new long[] { padding, padding }).to_type(ScalarType.Float32);
            CollectionAssert.AreEqual(expected.shape, output.shape, what);
            Assert.IsLessThan(1e-3, (output - expected).abs().max().item<float>(), what);

            Tensor upstream = randn_like(output);
            Tensor[] gradients = autograd.grad(new[] { output }, new[] { input, weight, bias }, new[] { upstream }).ToArray();
            Tensor[] expectedGradients = autograd.grad(new[] { expected }, new[] { input, weight, bias }, new[] { upstream }).ToArray();
            for (int i = 0; i < 3; i++)
            {
                float scale = expectedGradients[i].abs().max().item<float>(), difference = (gradients[i] - expectedGradients[i]).abs().max().item<float>();
                Assert.IsLessThan(1e-4 * scale, difference, $"{what}: gradient {i}, largest {scale}, difference {difference}");
            }
        }

        [TestMethod]
        public void AWidenedVggKeepsItsParameterNamesAndConvolvesRight()
        {
            torch.random.manual_seed(4);
            using ClassifierNetwork network = ClassifierNetwork.Create(
                Architectures.Create(ImageClassifierArchitecture.VggSmall, new ImageShape(1, 28, 28), 10, width: 1.35));
            CollectionAssert.IsSubsetOf(new[] { "conv2.weight", "conv5.weight" }, network.StateDictionary().Keys.ToArray());
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var conv2 = (nn.Module<Tensor, Tensor>)network.Module.named_children().Single(c => c.name == "conv2").module;
            Tensor weight = network.StateDictionary()["conv2.weight"];
            Assert.AreEqual(43L, weight.shape[1]);
            Tensor input = randn(4, 43, 28, 28);
            Tensor expected = weight.view(43, -1).matmul(nn.functional.unfold(input, 3, padding: 1)).view(4, 43, 28, 28);
            Assert.IsLessThan(1e-3, (conv2.call(input) - expected).abs().max().item<float>());
        }

        [TestMethod]
        public void ShiftAttentionAtAnOddWidthScoresTheSameCompactAndOnItsModules()
        {
            torch.random.manual_seed(6);
            using ClassifierNetwork trained = ClassifierNetwork.Create(
                Architectures.Create(ImageClassifierArchitecture.VggSmall, new ImageShape(1, 28, 28), 10, convolution: ConvolutionKind.ShiftAttention, width: 1.35));
            using ClassifierNetwork hardened = ShiftAttentionCompaction.Harden(trained, AttentionHardening.ArgMax);
            using ClassifierNetwork compact = ShiftAttentionCompaction.Compact(hardened, foldBatchNorm: true);
            // The hardened network (k×k convolutions with one-hot kernels, on libtorch) and the compact runtime (managed
            // shift kernels) agree on the logits before the softmax flattens them.
            var random = new Random(3);
            float[] images = Enumerable.Range(0, 8 * 784).Select(_ => (float)random.NextDouble()).ToArray();
            using var scope = NewDisposeScope();
            Tensor batch = tensor(images, new long[] { 8, 1, 28, 28 });
            hardened.Module.eval();
            Tensor logits;
            using (no_grad())
                logits = hardened.Forward(batch);
            float[] reference = logits.softmax(1).data<float>().ToArray();
            var scores = new float[8 * 10];
            compact.Predict(images, scores);
            Assert.IsLessThan(1e-5, reference.Zip(scores).Max(p => Math.Abs(p.First - p.Second)));
            Assert.IsGreaterThan(0.01f, logits.std().item<float>(), "the logits must differ from image to image and class to class");
        }
    }
}
