// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Pruners;
using Microsoft.ML.Pruning.Pruners.SynapticStrength;
using Microsoft.ML.Pruning.Reports;
using Microsoft.ML.Pruning.Training;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using TorchSharp;
using static Microsoft.ML.Pruning.Tests.Pruners.PrunerTestModels;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Tests.Pruners
{
    [TestClass]
    public sealed class SynapticStrengthPrunerTests
    {
        private const double Tolerance = 1e-4;
        private static MLContext s_ml = null!;
        private static IDataView s_train = null!;
        private static ITransformer s_vgg = null!;

        [ClassInitialize]
        public static void TrainModels(TestContext _)
        {
            s_ml = new MLContext(seed: 1);
            s_train = s_ml.Data.Cache(SyntheticImages.Load(s_ml, 256));
            s_vgg = Train(s_ml, s_train, ImageClassifierArchitecture.VggSmall, epochs: 2);
        }

        [ClassCleanup]
        public static void DisposeModels() => DisposeAll(s_vgg);

        /// <summary>Random weights and batch-norm statistics, with scales of both signs, so that every channel matters.</summary>
        private static ClassifierNetwork RandomNetwork(NetworkDefinition definition, int seed)
        {
            torch.random.manual_seed(seed);
            var network = ClassifierNetwork.Create(definition);
            using var noGrad = no_grad();
            foreach (var (name, value) in network.StateDictionary())
            {
                if (name.EndsWith("running_var", StringComparison.Ordinal))
                    value.copy_(rand_like(value) + 0.5);
                else if (name.EndsWith("running_mean", StringComparison.Ordinal) || name.EndsWith(".bias", StringComparison.Ordinal))
                    value.copy_(randn_like(value) * 0.1);
                else if (value.dtype == ScalarType.Float32 && name.Contains("bn", StringComparison.Ordinal) && name.EndsWith(".weight", StringComparison.Ordinal))
                    value.copy_((rand_like(value) + 0.5) * (rand_like(value) < 0.2).to_type(ScalarType.Float32).mul(-2).add(1));
            }
            network.Module.eval();
            return network;
        }

        private static float[] CompactScores(ClassifierNetwork network, Tensor images)
        {
            float[] pixels = images.contiguous().data<float>().ToArray();
            var scores = new float[images.shape[0] * network.Definition.Classes];
            network.Predict(pixels, scores);
            return scores;
        }

        private static void AssertClose(Tensor expected, Tensor actual, string what)
            => Assert.IsTrue(expected.allclose(actual, rtol: 0, atol: Tolerance), $"{what}: largest difference {(expected - actual).abs().max().item<float>()}");

        [TestMethod]
        [DataRow(ImageClassifierArchitecture.VggSmall)]
        [DataRow(ImageClassifierArchitecture.ResNet20)]
        public void TheReparametrizedNetworkComputesWhatTheOriginalComputes(ImageClassifierArchitecture architecture)
        {
            NetworkDefinition definition = Architectures.Create(architecture, new ImageShape(1, 16, 16), 4, width: 0.5);
            using ClassifierNetwork original = RandomNetwork(definition, 3);
            using ClassifierNetwork reparametrized = original.Clone();
            var layers = SynapticStrengthPruner.PrunedLayers(definition);
            var before = original.StateDictionary();
            using (var strengths = SynapticStrengthParametrization.Create(reparametrized, layers))
            {
                using var scope = NewDisposeScope();
                var after = reparametrized.StateDictionary();
                // The producing layer's batch-norm scale is folded away: ±1 now, and the strength is |γ_i|·‖K[o,i]‖.
                string consumer = architecture == ImageClassifierArchitecture.VggSmall ? "conv2" : "stage1_0.body.conv2";
                string norm = architecture == ImageClassifierArchitecture.VggSmall ? "bn1" : "stage1_0.body.bn1";
                Tensor gamma = before[norm + ".weight"];
                Assert.IsTrue(after[norm + ".weight"].abs().eq(1).all().item<bool>(), "γ becomes its sign");
                Tensor expected = gamma.abs().view(1, -1) * before[consumer + ".weight"].square().sum(new long[] { 2, 3 }).sqrt();
                AssertClose(expected, new SynapticStrengthImportance().Score(after[consumer + ".weight"]).to_type(ScalarType.Float32), "strengths");
                Assert.IsTrue(before[norm + ".weight"].lt(0).any().item<bool>(), "the test covers negative scales");

                torch.random.manual_seed(4);
                Tensor images = randn(5, 1, 16, 16);
                AssertClose(original.Predict(images), reparametrized.Predict(images), "libtorch");
                AssertClose(original.Predict(images), tensor(CompactScores(reparametrized, images)).view(5, 4), "compact runtime");
            }
            Assert.IsTrue(reparametrized.NamedParameters().All(p => p.Parameter.requires_grad), "the scales train again afterwards");
            // Disposing returns the ordinary parametrization: every parameter as it was (the same function).
            var restored = reparametrized.StateDictionary();
            foreach (var (name, value) in before)
                AssertClose(value, restored[name], name + " restored");
        }

        /// <summary>A small network of kernel-sparse layers: odd sizes, stride 2, batch norm, pooling and a residual block.</summary>
        private static (ClassifierNetwork Masked, ClassifierNetwork Sparse) KernelSparseNetworks(int seed)
        {
            var definition = new NetworkDefinition
            {
                Architecture = "test",
                Input = new ImageShape(3, 13, 11),
                Classes = 5,
                Layers = new LayerDefinition[]
                {
                    new Conv2dLayer { Name = "conv1", InChannels = 3, OutChannels = 20, KernelSize = 3, Stride = 2, Padding = 1, Bias = true },
                    new BatchNorm2dLayer { Name = "bn1", Channels = 20 },
                    new ReluLayer { Name = "relu1" },
                    new Conv2dLayer { Name = "conv2", InChannels = 20, OutChannels = 18, KernelSize = 3, Padding = 1, Bias = false },
                    new BatchNorm2dLayer { Name = "bn2", Channels = 18 },
                    new ReluLayer { Name = "relu2" },
                    new ResidualBlock
                    {
                        Name = "block",
                        Body = new LayerDefinition[]
                        {
                            new Conv2dLayer { Name = "conv", InChannels = 18, OutChannels = 18, KernelSize = 5, Padding = 2 },
                            new BatchNorm2dLayer { Name = "bn", Channels = 18 },
                        },
                    },
                    new MaxPool2dLayer { Name = "pool" },
                    new FlattenLayer { Name = "flatten" },
                    new LinearLayer { Name = "fc", InFeatures = 18 * 3 * 3, OutFeatures = 5 },
                },
            };
            ClassifierNetwork masked = RandomNetwork(definition, seed);
            var random = new Random(seed);
            var kept = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            using (var scope = NewDisposeScope())
            using (no_grad())
            {
                foreach (var (path, layer) in definition.Flatten().Where(l => l.Layer is Conv2dLayer))
                {
                    var conv = (Conv2dLayer)layer;
                    bool[] keep = Enumerable.Range(0, conv.OutChannels * conv.InChannels).Select(_ => random.NextDouble() < 0.3).ToArray();
                    Tensor connections = tensor(keep).view(conv.OutChannels, conv.InChannels);
                    masked.StateDictionary()[path + ".weight"].mul_(connections.unsqueeze(-1).unsqueeze(-1));
                    kept[path] = connections.DetachFromDisposeScope();
                }
            }
            masked.ResetCompiledForm();
            ClassifierNetwork sparse = KernelSparseCompaction.Convert(masked, kept);
            sparse.Module.eval();
            foreach (Tensor t in kept.Values)
                t.Dispose();
            return (masked, sparse);
        }

        [TestMethod]
        public void TheKernelSparseRuntimeEqualsTheMaskedDenseNetwork()
        {
            var (masked, sparse) = KernelSparseNetworks(7);
            using (masked)
            using (sparse)
            {
                Assert.AreEqual(3, sparse.Definition.Flatten().Count(l => l.Layer is KernelSparseConv2dLayer));
                Assert.IsTrue(sparse.CompiledForm()!.Steps.Any(s => s.Kind == "kernel-sparse conv2d"), sparse.CompiledForm()!.ToString());
                Assert.IsTrue(sparse.Definition.MultiplyAccumulates() < masked.Definition.MultiplyAccumulates() / 2);
                foreach (int batch in new[] { 1, 259 })
                {
                    using var scope = NewDisposeScope();
                    torch.random.manual_seed(batch);
                    Tensor images = randn(batch, 3, 13, 11);
                    Tensor expected = masked.Predict(images);
                    AssertClose(expected, sparse.Predict(images), $"libtorch, batch {batch}");
                    AssertClose(expected, tensor(CompactScores(sparse, images)).view(batch, 5), $"compact runtime, batch {batch}");
                }

                // Saved and loaded through the weights format and the definition's JSON, the same network.
                using var stream = new MemoryStream();
                using (var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true))
                    sparse.SaveWeights(writer);
                var definition = NetworkDefinition.FromJson(sparse.Definition.ToJson());
                Assert.AreEqual(sparse.Definition.ToJson(), definition.ToJson());
                using ClassifierNetwork loaded = ClassifierNetwork.Create(definition);
                stream.Position = 0;
                using (var reader = new BinaryReader(stream))
                    loaded.LoadWeights(reader);
                loaded.Module.eval();
                using var images2 = randn(4, 3, 13, 11);
                CollectionAssert.AreEqual(CompactScores(sparse, images2), CompactScores(loaded, images2));
            }
        }

        [TestMethod]
        public void StoredConnectionsMustBeAscendingAndInRange()
        {
            var (masked, sparse) = KernelSparseNetworks(8);
            using (masked)
            using (sparse)
            {
                foreach (long[] bad in new[] { new long[] { 5, 3 }, new long[] { -1, 2 }, new long[] { 0, 20L * 3 } })
                {
                    using var scope = NewDisposeScope();
                    var state = sparse.StateDictionary().ToDictionary(kv => kv.Key, kv => kv.Value);
                    long[] connections = state["conv1.connections"].data<long>().ToArray();
                    connections[0] = bad[0];
                    connections[1] = bad[1];
                    state["conv1.connections"] = tensor(connections);
                    using var stream = new MemoryStream();
                    using (var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true))
                        TensorStore.Write(writer, state.Select(kv => (kv.Key, kv.Value)));
                    stream.Position = 0;
                    using var reader = new BinaryReader(stream);
                    var error = Assert.ThrowsExactly<FormatException>(() => ClassifierNetwork.ReadWeights(reader, sparse.Definition));
                    StringAssert.Contains(error.Message, "Tensor 'conv1.connections' has value");
                    StringAssert.Contains(error.Message, "strictly ascending, at least 0 and below 60");
                }
                var tooMany = sparse.Definition with
                {
                    Layers = NetworkWalker.MapLayers(sparse.Definition.Layers, (p, l) => l is KernelSparseConv2dLayer k && p == "conv2" ? k with { Connections = 361 } : l),
                };
                var ex = Assert.ThrowsExactly<InvalidOperationException>(() => DefinitionLimits.Check(tooMany));
                StringAssert.Contains(ex.Message, "Layer 'conv2' (KernelSparseConv2dLayer) has Connections 361; it must be between 0 and 360.");
            }
        }

        [TestMethod]
        public void RemovingChannelsOfKernelSparseLayersComputesWhatZeroingThemComputes()
        {
            var (masked, sparse) = KernelSparseNetworks(9);
            using (masked)
            using (sparse)
            {
                var random = new Random(2);
                var selection = new ChannelSelection(ChannelGroups.Find(sparse.Definition).Where(g => g.Prunable).Select(g =>
                    (g, Enumerable.Range(0, g.Channels).Where(c => c == 0 || random.NextDouble() < 0.6).Select(c => (long)c).ToArray())).ToArray());
                Assert.IsTrue(selection.RemovesAny);
                using ClassifierNetwork pruned = ChannelSurgery.Remove(sparse, selection);
                using ClassifierNetwork zeroed = sparse.Clone();
                zeroed.Module.eval();
                ChannelSurgery.ZeroRemoved(zeroed, selection);
                Assert.IsTrue(pruned.Definition.Flatten().All(l => l.Layer is not KernelSparseConv2dLayer k || k.Connections < k.InChannels * k.OutChannels));
                using var scope = NewDisposeScope();
                torch.random.manual_seed(5);
                Tensor images = randn(6, 3, 13, 11);
                Tensor expected = zeroed.Predict(images);
                AssertClose(expected, pruned.Predict(images), "libtorch");
                AssertClose(expected, tensor(CompactScores(pruned, images)).view(6, 5), "compact runtime");
            }
        }

        private static (ITransformer Model, PruningReport Report) Prune(SynapticStrengthPruner.Options options, MLContext? ml = null, IDataView? data = null)
        {
            PruningReport? report = null;
            options.PruningCompleted = r => report = r;
            ITransformer pruned = (ml ?? s_ml).Transforms.PruneSynapticStrength(s_vgg, options).Fit(data ?? s_train);
            return (pruned, report!);
        }

        [TestMethod]
        [DataRow(KernelCriterion.SynapticStrength, LayerAllocation.Global)]
        [DataRow(KernelCriterion.KernelNorm, LayerAllocation.Uniform)]
        public void PruningKeepsTheConnectionFractionAsKernelSparseLayersThatSaveAndLoad(KernelCriterion criterion, LayerAllocation allocation)
        {
            var (pruned, report) = Prune(new SynapticStrengthPruner.Options
            {
                Criterion = criterion, Allocation = allocation, KeptConnectionFraction = 0.1, SparsityEpochs = 1, RetrainEpochs = 1, Lambda = 1e-3,
            });
            string zip = TempZip();
            try
            {
                Assert.AreEqual(criterion == KernelCriterion.SynapticStrength ? "synaptic" : "kernel-norm", report.Method);
                Assert.AreEqual(4, report.Layers.Count, "conv2 to conv5 (the stem has one input channel)");
                Assert.AreEqual(0.1, report.KeptFraction, 0.002);
                if (allocation == LayerAllocation.Uniform)
                    Assert.IsTrue(report.Layers.All(l => Math.Abs(l.KeptFraction - 0.1) < 0.01));
                ClassifierNetwork network = Classifier(pruned).Network;
                var sparse = network.Definition.Flatten().Select(l => l.Layer).OfType<KernelSparseConv2dLayer>().ToList();
                Assert.AreEqual(4, sparse.Count);
                long connections = sparse.Sum(l => (long)l.Connections);
                Assert.IsTrue(connections <= report.KeptWeights / 9, "dead channels can only remove more");
                ModelSummary summary = pruned.GetSummary();
                StringAssert.Contains(summary.ToString(), "KernelSparse 3x3");
                Assert.IsTrue(summary.MultiplyAccumulates < 0.3 * s_vgg.GetSummary().MultiplyAccumulates);
                Assert.IsTrue(summary.SerializedBytes < 0.4 * s_vgg.GetSummary().SerializedBytes, "the pruned kernels are not stored");

                float[] scores = pruned.Transform(s_train).GetColumn<float[]>("Score").SelectMany(s => s).ToArray();
                network.Backend = InferenceBackend.LibTorch;
                float[] reference = pruned.Transform(s_train).GetColumn<float[]>("Score").SelectMany(s => s).ToArray();
                network.Backend = InferenceBackend.Compact;
                Assert.IsTrue(scores.Zip(reference).All(p => Math.Abs(p.First - p.Second) < Tolerance), "compact runtime and libtorch agree");

                s_ml.Model.Save(pruned, s_train.Schema, zip);
                ITransformer loaded = s_ml.Model.Load(zip, out _);
                try
                {
                    CollectionAssert.AreEqual(scores, loaded.Transform(s_train).GetColumn<float[]>("Score").SelectMany(s => s).ToArray());
                }
                finally
                {
                    DisposeAll(loaded);
                }
            }
            finally
            {
                File.Delete(zip);
                DisposeAll(pruned);
            }
        }

        [TestMethod]
        public void TheSameSeedGivesTheSameModelAndSparsityTrainingZeroesStrengths()
        {
            var messages = new List<string>();
            SynapticStrengthPruner.Options Options() => new() { KeptConnectionFraction = 0.2, SparsityEpochs = 2, Lambda = 0.5, BatchSize = 16, RetrainIterations = 2 };
            var first = new MLContext(seed: 5);
            first.Log += (_, e) => messages.Add(e.Message);
            IDataView data = s_ml.Data.Cache(SyntheticImages.Load(s_ml, 64));
            var (a, _) = Prune(Options(), first, data);
            var (b, _) = Prune(Options(), new MLContext(seed: 5), data);
            try
            {
                var wa = Weights(a);
                var wb = Weights(b);
                CollectionAssert.AreEquivalent(wa.Keys.ToList(), wb.Keys.ToList());
                foreach (var (name, values) in wa)
                    CollectionAssert.AreEqual(values, wb[name], name);
                string line = messages.Single(m => m.Contains("of the strengths are zero", StringComparison.Ordinal));
                double zero = double.Parse(line.Split("): ")[1].Split('%')[0], System.Globalization.CultureInfo.InvariantCulture);
                Assert.IsTrue(zero > 1, line);
            }
            finally
            {
                DisposeAll(a);
                DisposeAll(b);
            }
        }

        [TestMethod]
        public void StrengthsAtZeroRankByTheirStrengthBeforeSparsityTraining()
        {
            using var scope = NewDisposeScope();
            // Two kernels kept their strength (0.3, 0.02), three reached zero; before training they were 0.1, 0.9, 0.5, 0.2, 0.7.
            Tensor trained = tensor(new double[] { 0.3, 0, 0.02, 0, 0 }).view(1, 5);
            Tensor before = tensor(new double[] { 0.1, 0.9, 0.5, 0.2, 0.7 }).view(1, 5);
            Tensor ranked = Microsoft.ML.Pruning.Pruners.Common.ScoreTies.Break(trained, before);
            long[] order = ranked.flatten().argsort(descending: true).data<long>().ToArray();
            CollectionAssert.AreEqual(new long[] { 0, 2, 1, 4, 3 }, order);
            // The positive strengths move by at most a millionth of the smallest of them.
            Assert.IsLessThan(0.02 * 1e-6 + 1e-15, (ranked - trained).abs().max().item<double>());
            // Without zeros the order is the trained one.
            long[] plain = Microsoft.ML.Pruning.Pruners.Common.ScoreTies.Break(tensor(new double[] { 0.2, 0.1, 0.3 }).view(1, 3), tensor(new double[] { 0.9, 0.8, 0.1 }).view(1, 3))
                .flatten().argsort(descending: true).data<long>().ToArray();
            CollectionAssert.AreEqual(new long[] { 2, 0, 1 }, plain);
        }

        [TestMethod]
        public void InvalidOptionsAreNamed()
        {
            void Expect(SynapticStrengthPruner.Options options, string name)
            {
                var error = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => s_ml.Transforms.PruneSynapticStrength(s_vgg, options));
                Assert.AreEqual(name, error.ParamName);
                StringAssert.Contains(error.Message, "Options." + name);
            }
            Expect(new() { KeptConnectionFraction = 0 }, nameof(SynapticStrengthPruner.Options.KeptConnectionFraction));
            Expect(new() { PrunedConnectionFraction = 1 }, nameof(SynapticStrengthPruner.Options.PrunedConnectionFraction));
            Expect(new() { Lambda = -1e-4 }, nameof(SynapticStrengthPruner.Options.Lambda));
            Expect(new() { Lambda = double.NaN }, nameof(SynapticStrengthPruner.Options.Lambda));
            Expect(new() { SparsityEpochs = -1 }, nameof(SynapticStrengthPruner.Options.SparsityEpochs));
            var criterion = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => s_ml.Transforms.PruneSynapticStrength(s_vgg, new() { Criterion = (KernelCriterion)7 }));
            Assert.AreEqual("Criterion", criterion.ParamName);

            ITransformer mlp = Train(s_ml, s_train, ImageClassifierArchitecture.LeNet300100, epochs: 1);
            try
            {
                var none = Assert.ThrowsExactly<ArgumentException>(() => s_ml.Transforms.PruneSynapticStrength(mlp));
                StringAssert.Contains(none.Message, "no convolution with more than one input channel");
            }
            finally
            {
                DisposeAll(mlp);
            }
        }
    }
}
