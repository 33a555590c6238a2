// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Pruners;
using Microsoft.ML.Pruning.Pruners.Discrimination;
using Microsoft.ML.Pruning.Training;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using TorchSharp;
using static Microsoft.ML.Pruning.Tests.Pruners.PrunerTestModels;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Tests.Pruners
{
    [TestClass]
    public sealed class DiscriminationAwarePrunerTests
    {
        private static MLContext s_ml = null!;
        private static IDataView s_train = null!;
        private static ITransformer s_vgg = null!;

        [ClassInitialize]
        public static void TrainModel(TestContext _)
        {
            s_ml = new MLContext(seed: 1);
            s_train = s_ml.Data.Cache(SyntheticImages.Load(s_ml, 128, height: 8, width: 8));
            var options = new ImageClassifierTrainer.Options { Architecture = ImageClassifierArchitecture.VggSmall, Width = 0.25, Epochs = 2, BatchSize = 32 };
            s_vgg = SyntheticImages.MapLabel(s_ml).Append(s_ml.MulticlassClassification.Trainers.ImageClassifier(options))
                .Append(s_ml.Transforms.Conversion.MapKeyToValue("PredictedLabel")).Fit(s_train);
        }

        [ClassCleanup]
        public static void DisposeModel() => DisposeAll(s_vgg);

        private static NetworkDefinition Definition(ImageClassifierArchitecture architecture)
            => Architectures.Create(architecture, new ImageShape(1, 28, 28), 10, new NormalizeLayer { Name = "normalize", Mean = new[] { 0.3f }, Std = new[] { 0.35f } });

        [TestMethod]
        public void ThePrunedLayersAreTheVggsConvolutionsAndTheResNetsBlockInsides()
        {
            CollectionAssert.AreEqual(new[] { "conv2", "conv3", "conv4", "conv5" },
                DiscriminationAwarePruner.PrunedLayers(Definition(ImageClassifierArchitecture.VggSmall)).Select(l => l.Path).ToArray());
            var resnet = DiscriminationAwarePruner.PrunedLayers(Definition(ImageClassifierArchitecture.ResNet20));
            CollectionAssert.AreEqual(Enumerable.Range(1, 3).SelectMany(s => Enumerable.Range(0, 3).Select(b => $"stage{s}_{b}.body.conv2")).ToArray(),
                resnet.Select(l => l.Path).ToArray());
            Assert.IsTrue(resnet.All(l => !l.Group.IsResidual));
        }

        [TestMethod]
        [DataRow(ImageClassifierArchitecture.VggSmall, new[] { 10, 14 }, new[] { 64, 64 })]
        [DataRow(ImageClassifierArchitecture.ResNet20, new[] { 6, 8, 10 }, new[] { 16, 32, 64 })]
        public void AuxiliaryClassifiersReadTheirLayersAndGiveOneLogitPerClass(ImageClassifierArchitecture architecture, int[] taps, int[] channels)
        {
            torch.random.manual_seed(1);
            using ClassifierNetwork network = ClassifierNetwork.Create(Definition(architecture));
            using AuxiliaryClassifiers heads = AuxiliaryClassifiers.Create(network, taps);
            CollectionAssert.AreEqual(channels, heads.Heads.Select(h => (int)h.Channels).ToArray());
            Assert.IsTrue(heads.Heads.All(h => h.Classes == 10));
            // Batch norm (2·C) and linear (C·10 + 10) per head.
            Assert.AreEqual(channels.Sum(c => 2 * c + c * 10 + 10), heads.Parameters.Sum(p => p.numel()));

            using var scope = NewDisposeScope();
            network.Module.eval();
            heads.Train(false);
            Tensor images = rand(3, 1, 28, 28);
            var (logits, perHead) = heads.Forward(images, heads.Last);
            Assert.AreEqual(taps.Length, perHead.Length);
            Assert.IsTrue(perHead.All(h => h!.shape.SequenceEqual(new long[] { 3, 10 })));
            Assert.IsTrue(logits.allclose(network.Forward(images), rtol: 0, atol: 1e-5), "the tapped forward is the network's forward");
            // Starting from a layer's cached input gives the same logits; heads before that layer are not reached.
            int from = taps[^1];
            var (resumed, resumedHeads) = heads.Forward(heads.InputOf(images, from), from, heads.Last);
            Assert.IsTrue(resumed.allclose(logits, rtol: 0, atol: 0), "the forward resumed at a layer is the whole forward");
            for (int h = 0; h < taps.Length; h++)
            {
                if (taps[h] < from)
                    Assert.IsNull(resumedHeads[h]);
                else
                    Assert.IsTrue(resumedHeads[h]!.allclose(perHead[h]!, rtol: 0, atol: 0));
            }
        }

        [TestMethod]
        public void TheGreedyStepPicksTheOnlyChannelThatCarriesASignal()
        {
            // conv1's channels other than 3 are switched off by their batch norm, so they are exactly zero wherever read:
            // the loss's gradient is zero on them and the selection for conv2, keeping one channel, must take channel 3.
            ITransformer model = new MLContext().Model.Load(SaveToStream(s_vgg), out _);
            ClassifierNetwork network = Classifier(model).Network;
            var state = network.StateDictionary();
            using (no_grad())
            {
                var off = tensor(new long[] { 0, 1, 2, 4, 5, 6, 7 });
                state["bn1.weight"].index_fill_(0, off, 0);
                state["bn1.bias"].index_fill_(0, off, 0);
            }
            float kept = state["bn1.weight"].data<float>()[3];
            ITransformer pruned = s_ml.Transforms.PruneDiscriminationAware(model, new DiscriminationAwarePruner.Options
            {
                PruningRate = 0.875,
                SelectionImages = 64,
                AuxiliaryEpochs = 0, // training would move the switched-off batch norms
                BatchSize = 32,
            }).Fit(s_train);
            try
            {
                float[] gamma = Classifier(pruned).Network.StateDictionary()["bn1.weight"].data<float>().ToArray();
                CollectionAssert.AreEqual(new[] { kept }, gamma);
            }
            finally
            {
                DisposeAll(pruned);
                DisposeAll(model);
            }
        }

        [TestMethod]
        public void AMacsTargetGivesASmallerNetworkThatSavesAndLoads()
        {
            PruningReport? report = null;
            ITransformer pruned = s_ml.Transforms.PruneDiscriminationAware(s_vgg, new DiscriminationAwarePruner.Options
            {
                MacsReduction = 2,
                SelectionImages = 64,
                BatchSize = 32,
                RetrainIterations = 2,
                PruningCompleted = r => report = r,
            }).Fit(s_train);
            try
            {
                NetworkDefinition dense = Classifier(s_vgg).Network.Definition, small = Classifier(pruned).Network.Definition;
                Assert.IsLessThanOrEqualTo(dense.MultiplyAccumulates() / 2, small.MultiplyAccumulates());
                Assert.AreEqual("dcp", report!.Method);
                Assert.AreEqual(2, report.RetrainingSteps);
                // The channels of conv1..conv4 are selected; conv5's (read by the fully connected layer) and fc1's are kept.
                CollectionAssert.AreEqual(new[] { "conv1", "conv2", "conv3", "conv4" },
                    report.ChannelGroups!.Where(g => g.KeptChannels < g.Channels).Select(g => g.Group).ToArray(), report.ToString());

                string zip = TempZip();
                try
                {
                    s_ml.Model.Save(pruned, s_train.Schema, zip);
                    ITransformer loaded = new MLContext().Model.Load(zip, out _);
                    CollectionAssert.AreEqual(Scores(pruned), Scores(loaded));
                    DisposeAll(loaded);
                }
                finally
                {
                    File.Delete(zip);
                }
            }
            finally
            {
                DisposeAll(pruned);
            }
        }

        [TestMethod]
        public void AResNetsBlockInsidesAreSelectedAndTheSmallerNetworkSavesAndLoads()
        {
            var options = new ImageClassifierTrainer.Options { Architecture = ImageClassifierArchitecture.ResNet20, Width = 0.5, Epochs = 1, BatchSize = 32 };
            ITransformer resnet = SyntheticImages.MapLabel(s_ml).Append(s_ml.MulticlassClassification.Trainers.ImageClassifier(options))
                .Append(s_ml.Transforms.Conversion.MapKeyToValue("PredictedLabel")).Fit(s_train);
            PruningReport? report = null;
            ITransformer pruned = s_ml.Transforms.PruneDiscriminationAware(resnet, new DiscriminationAwarePruner.Options
            {
                PruningRate = 0.75,
                SelectionImages = 48,
                BatchSize = 32,
                RetrainIterations = 1,
                PruningCompleted = r => report = r,
            }).Fit(s_train);
            try
            {
                // Every block's inner width (8, 16, 32 at width 0.5) keeps c − ⌊0.75·c⌋; the stages' widths stay.
                var groups = report!.ChannelGroups!.Where(g => g.KeptChannels < g.Channels).ToArray();
                Assert.HasCount(9, groups, report.ToString());
                CollectionAssert.AreEqual(new[] { 2, 2, 2, 4, 4, 4, 8, 8, 8 }, groups.Select(g => g.KeptChannels).ToArray(), report.ToString());
                NetworkDefinition small = Classifier(pruned).Network.Definition;
                Assert.IsLessThan(Classifier(resnet).Network.Definition.MultiplyAccumulates(), small.MultiplyAccumulates());
                string zip = TempZip();
                try
                {
                    s_ml.Model.Save(pruned, s_train.Schema, zip);
                    ITransformer loaded = new MLContext().Model.Load(zip, out _);
                    CollectionAssert.AreEqual(Scores(pruned), Scores(loaded));
                    DisposeAll(loaded);
                }
                finally
                {
                    File.Delete(zip);
                }
            }
            finally
            {
                DisposeAll(pruned);
                DisposeAll(resnet);
            }
        }

        [TestMethod]
        public void RandomSelectionIsTheSeededControl()
        {
            float[] Gamma(int seed)
            {
                var ml = new MLContext(seed: seed);
                ITransformer pruned = ml.Transforms.PruneDiscriminationAware(s_vgg, new DiscriminationAwarePruner.Options { RandomSelection = true, PruningRate = 0.5 }).Fit(s_train);
                float[] gamma = Classifier(pruned).Network.StateDictionary()["bn3.weight"].data<float>().ToArray();
                DisposeAll(pruned);
                return gamma;
            }
            Assert.HasCount(8, Gamma(3));
            CollectionAssert.AreEqual(Gamma(3), Gamma(3));
            CollectionAssert.AreNotEqual(Gamma(3), Gamma(4));
        }

        [TestMethod]
        public void BadOptionsNameTheOption()
        {
            var cases = new (DiscriminationAwarePruner.Options Options, string Expected)[]
            {
                (new() { MacsReduction = 0.5 }, "Options.MacsReduction must be a number of at least 1"),
                (new() { PruningRate = 1 }, "Options.PruningRate must be in [0, 1)"),
                (new() { AuxiliaryLosses = -1 }, "Options.AuxiliaryLosses must be zero or positive"),
                (new() { Lambda = -1 }, "Options.Lambda must be zero or positive"),
                (new() { SelectionImages = 0 }, "Options.SelectionImages must be at least 1"),
                (new() { SelectionLearningRate = 0 }, "Options.SelectionLearningRate must be a positive number"),
                (new() { SelectionPasses = 0 }, "Options.SelectionPasses must be at least 1"),
                (new() { AdaptiveEpsilon = 0 }, "Options.AdaptiveEpsilon must be a positive number"),
                (new() { AuxiliaryEpochs = -1 }, "Options.AuxiliaryEpochs must be zero or positive"),
            };
            foreach (var (options, expected) in cases)
            {
                var ex = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => s_ml.Transforms.PruneDiscriminationAware(s_vgg, options));
                StringAssert.Contains(ex.Message, expected);
            }
            var lenet = Assert.ThrowsExactly<ArgumentException>(() => s_ml.Transforms.PruneDiscriminationAware(Lenet300()));
            StringAssert.Contains(lenet.Message, "this lenet300 model has none");
        }

        private static ITransformer Lenet300()
        {
            var ml = new MLContext(seed: 1);
            return Train(ml, SyntheticImages.Load(ml, 16, height: 8, width: 8), ImageClassifierArchitecture.LeNet300100, epochs: 1);
        }

        private static float[] Scores(ITransformer model) => model.Transform(s_train).GetColumn<float[]>("Score").SelectMany(s => s).ToArray();

        private static MemoryStream SaveToStream(ITransformer model)
        {
            var stream = new MemoryStream();
            s_ml.Model.Save(model, s_train.Schema, stream);
            stream.Position = 0;
            return stream;
        }
    }
}
