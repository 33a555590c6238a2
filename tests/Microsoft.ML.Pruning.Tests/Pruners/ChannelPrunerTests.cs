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
using Microsoft.ML.Pruning.Reports;
using Microsoft.ML.Pruning.Training;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using TorchSharp;
using static Microsoft.ML.Pruning.Tests.Pruners.PrunerTestModels;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Tests.Pruners
{
    [TestClass]
    public sealed class ChannelPrunerTests
    {
        private static MLContext s_ml = null!;
        private static IDataView s_train = null!;
        private static ITransformer s_vgg = null!;
        private static ITransformer s_resnet = null!;

        [ClassInitialize]
        public static void TrainModels(TestContext _)
        {
            s_ml = new MLContext(seed: 1);
            s_train = s_ml.Data.Cache(SyntheticImages.Load(s_ml, 256));
            s_vgg = Train(s_ml, s_train, ImageClassifierArchitecture.VggSmall, epochs: 2);
            s_resnet = Train(s_ml, s_train, ImageClassifierArchitecture.ResNet20, epochs: 1);
        }

        [ClassCleanup]
        public static void DisposeModels()
        {
            DisposeAll(s_vgg);
            DisposeAll(s_resnet);
        }

        private static (ITransformer Model, PruningReport Report) Prune(ITransformer model, ChannelPruner.Options options, IDataView? data = null)
        {
            PruningReport? report = null;
            options.PruningCompleted = r => report = r;
            ITransformer pruned = s_ml.Transforms.PruneChannels(model, options).Fit(data ?? s_train);
            return (pruned, report!);
        }

        private static float[] Scores(ITransformer model, IDataView data)
            => model.Transform(data).GetColumn<float[]>("Score").SelectMany(s => s).ToArray();

        [TestMethod]
        public void AMacsTargetIsMetByASmallerNetworkThatSavesAndLoads()
        {
            var (pruned, report) = Prune(s_vgg, new ChannelPruner.Options { MacsReduction = 2 });
            try
            {
                ModelSummary dense = Classifier(s_vgg).GetSummary(), small = Classifier(pruned).GetSummary();
                Assert.IsLessThanOrEqualTo(dense.MultiplyAccumulates / 2, small.MultiplyAccumulates, "at least 2x fewer MACs");
                Assert.IsGreaterThan(dense.MultiplyAccumulates / 2.4, small.MultiplyAccumulates, "and not much more than asked");
                Assert.IsLessThan(dense.Parameters, small.Parameters);
                Assert.AreEqual(6, report.ChannelGroups!.Count);
                Assert.IsTrue(report.ChannelGroups.All(g => g.KeptChannels < g.Channels), report.ToString());
                // Uniform allocation: every group keeps about the same fraction.
                double[] fractions = report.ChannelGroups.Select(g => (double)g.KeptChannels / g.Channels).ToArray();
                Assert.IsLessThan(0.08, fractions.Max() - fractions.Min(), string.Join(", ", fractions));

                var conv3 = (Conv2dLayer)Classifier(pruned).Network.Definition.Flatten().Single(l => l.Path == "conv3").Layer;
                Assert.AreEqual(report.ChannelGroups.Single(g => g.Group == "conv2").KeptChannels, conv3.InChannels);
                Assert.AreEqual(report.ChannelGroups.Single(g => g.Group == "conv3").KeptChannels, conv3.OutChannels);

                string zip = TempZip();
                try
                {
                    s_ml.Model.Save(pruned, s_train.Schema, zip);
                    ITransformer loaded = new MLContext(seed: 2).Model.Load(zip, out _);
                    CollectionAssert.AreEqual(Scores(pruned, s_train), Scores(loaded, s_train));
                    Assert.AreEqual(small.MultiplyAccumulates, Classifier(loaded).GetSummary().MultiplyAccumulates);
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
        public void APrunedResNetWithItsResidualWidthPrunedSavesLoadsAndIsPrunedAgain()
        {
            var (pruned, report) = Prune(s_resnet, new ChannelPruner.Options { MacsReduction = 2, PruneResidualWidth = true, Allocation = LayerAllocation.Global });
            ITransformer? again = null;
            try
            {
                Assert.AreEqual(12, report.ChannelGroups!.Count);
                Assert.IsTrue(report.ChannelGroups.Where(g => g.IsResidual).Any(g => g.KeptChannels < g.Channels), report.ToString());
                NetworkDefinition definition = Classifier(pruned).Network.Definition;
                Assert.IsLessThanOrEqualTo(Classifier(s_resnet).Network.Definition.MultiplyAccumulates() / 2, definition.MultiplyAccumulates());
                // Global allocation: no group below a tenth of its channels.
                Assert.IsTrue(report.ChannelGroups.All(g => g.KeptChannels >= Math.Ceiling(0.1 * g.Channels)), report.ToString());

                string zip = TempZip();
                try
                {
                    s_ml.Model.Save(pruned, s_train.Schema, zip);
                    ITransformer loaded = new MLContext().Model.Load(zip, out _);
                    CollectionAssert.AreEqual(Scores(pruned, s_train), Scores(loaded, s_train));
                    Assert.AreEqual(definition.ToJson(), Classifier(loaded).Network.Definition.ToJson());
                    DisposeAll(loaded);
                }
                finally
                {
                    File.Delete(zip);
                }

                // A pruned model is a model like any other: prune it again, with fine-tuning.
                PruningReport? second = null;
                again = s_ml.Transforms.PruneChannels(pruned, new ChannelPruner.Options
                {
                    MacsReduction = 1.5,
                    RetrainIterations = 4,
                    BatchSize = 32,
                    PruningCompleted = r => second = r,
                }).Fit(s_train);
                Assert.IsLessThanOrEqualTo(definition.MultiplyAccumulates() / 1.5, Classifier(again).Network.Definition.MultiplyAccumulates());
                Assert.AreEqual(4, second!.RetrainingSteps);
                Assert.IsTrue(second.ChannelGroups!.Where(g => g.IsResidual).All(g => g.KeptChannels == g.Channels), "residual widths are kept by default");
            }
            finally
            {
                DisposeAll(pruned);
                if (again is not null)
                    DisposeAll(again);
            }
        }

        [TestMethod]
        public void KeptCountsAreMultiplesOfRoundChannelsTo()
        {
            var (pruned, report) = Prune(s_vgg, new ChannelPruner.Options { KeptChannelFraction = 0.4, RoundChannelsTo = 8 });
            try
            {
                foreach (ChannelGroupResult group in report.ChannelGroups!)
                {
                    Assert.AreEqual(0, group.KeptChannels % 8, $"{group.Group}: {group.KeptChannels}");
                    Assert.AreEqual(Math.Max(8, 8 * (int)Math.Round(0.4 * group.Channels / 8, MidpointRounding.AwayFromZero)), group.KeptChannels, group.Group);
                }
                foreach (var (path, layer) in Classifier(pruned).Network.Definition.Flatten())
                {
                    if (layer is Conv2dLayer conv && path != "conv1")
                        Assert.AreEqual(0, conv.InChannels % 8, path);
                }
            }
            finally
            {
                DisposeAll(pruned);
            }
        }

        [TestMethod]
        public void TheL1CriterionKeepsTheFiltersOfLargestNormAndTheBatchNormCriterionTheLargestScales()
        {
            ClassifierNetwork network = Classifier(s_vgg).Network;
            float[] conv4 = network.StateDictionary()["conv4.weight"].data<float>().ToArray();
            double[] norms = Enumerable.Range(0, 64).Select(o => conv4.Skip(o * 64 * 9).Take(64 * 9).Sum(w => (double)Math.Abs(w))).ToArray();
            float[] gamma = network.StateDictionary()["bn4.weight"].data<float>().ToArray();

            var fractions = new Dictionary<string, double> { ["conv4"] = 0.25 };
            var ignored = new List<string> { "conv1", "conv2", "conv3", "conv5", "fc1" };
            var (l1, l1Report) = Prune(s_vgg, new ChannelPruner.Options { LayerKeptFractions = fractions, IgnoredLayers = ignored });
            var (bn, _) = Prune(s_vgg, new ChannelPruner.Options { Criterion = ChannelCriterion.BatchNormScale, LayerKeptFractions = fractions, IgnoredLayers = ignored });
            try
            {
                Assert.AreEqual(16, l1Report.ChannelGroups!.Single(g => g.Group == "conv4").KeptChannels);
                Assert.IsTrue(l1Report.ChannelGroups!.Where(g => g.Group != "conv4").All(g => g.KeptChannels == g.Channels));
                int[] expectedL1 = Enumerable.Range(0, 64).OrderByDescending(c => norms[c]).Take(16).OrderBy(c => c).ToArray();
                int[] expectedBn = Enumerable.Range(0, 64).OrderByDescending(c => Math.Abs(gamma[c])).Take(16).OrderBy(c => c).ToArray();
                CollectionAssert.AreEqual(expectedL1.Select(c => gamma[c]).ToArray(), Classifier(l1).Network.StateDictionary()["bn4.weight"].data<float>().ToArray());
                CollectionAssert.AreEqual(expectedBn.Select(c => gamma[c]).ToArray(), Classifier(bn).Network.StateDictionary()["bn4.weight"].data<float>().ToArray());
            }
            finally
            {
                DisposeAll(l1);
                DisposeAll(bn);
            }
        }

        [TestMethod]
        public void RandomSelectionIsSeededByTheMLContext()
        {
            float[] Kept(int seed)
            {
                var ml = new MLContext(seed: seed);
                ITransformer pruned = ml.Transforms.PruneChannels(s_vgg, new ChannelPruner.Options { Criterion = ChannelCriterion.Random, KeptChannelFraction = 0.5 }).Fit(s_train);
                float[] gamma = Classifier(pruned).Network.StateDictionary()["bn3.weight"].data<float>().ToArray();
                DisposeAll(pruned);
                return gamma;
            }
            CollectionAssert.AreEqual(Kept(7), Kept(7));
            CollectionAssert.AreNotEqual(Kept(7), Kept(8));
        }

        [TestMethod]
        public void SlimmingsSparsityTrainingShrinksTheBatchNormScales()
        {
            double ScaleSum(double penalty)
            {
                var ml = new MLContext(seed: 1);
                var options = new ImageClassifierTrainer.Options { Architecture = ImageClassifierArchitecture.VggSmall, Epochs = 1, BatchSize = 32, BatchNormScaleL1 = penalty };
                ITransformer model = SyntheticImages.MapLabel(ml).Append(ml.MulticlassClassification.Trainers.ImageClassifier(options)).Fit(s_train);
                double sum = Classifier(model).Network.StateDictionary().Where(kv => kv.Key.StartsWith("bn", StringComparison.Ordinal) && kv.Key.EndsWith(".weight", StringComparison.Ordinal))
                    .Sum(kv => kv.Value.abs().sum().item<float>());
                DisposeAll(model);
                return sum;
            }
            double plain = ScaleSum(0), sparse = ScaleSum(0.01);
            // 8 steps at learning rate ≤ 0.05 with λ = 0.01 move each |γ| down by up to 0.004: about 1.4 over 352 scales.
            Assert.IsLessThan(plain - 0.5, sparse, $"with the penalty {sparse}, without {plain}");
        }

        [TestMethod]
        public void BadOptionsNameTheOption()
        {
            var cases = new (ChannelPruner.Options Options, ITransformer Model, Type Exception, string Expected)[]
            {
                (new() { KeptChannelFraction = 0 }, s_vgg, typeof(ArgumentOutOfRangeException), "Options.KeptChannelFraction must be in (0, 1]"),
                (new() { KeptChannelFraction = 1.5 }, s_vgg, typeof(ArgumentOutOfRangeException), "Options.KeptChannelFraction must be in (0, 1]"),
                (new() { MacsReduction = 0.5 }, s_vgg, typeof(ArgumentOutOfRangeException), "Options.MacsReduction must be a number of at least 1"),
                (new() { MacsReduction = double.NaN }, s_vgg, typeof(ArgumentOutOfRangeException), "Options.MacsReduction must be a number of at least 1"),
                (new() { RoundChannelsTo = 0 }, s_vgg, typeof(ArgumentOutOfRangeException), "Options.RoundChannelsTo must be at least 1"),
                (new() { PruningRounds = 2 }, s_vgg, typeof(ArgumentException), "rounds of pruning need fine-tuning in between"),
                (new() { LayerKeptFractions = new Dictionary<string, double> { ["conv3"] = 0 } }, s_vgg, typeof(ArgumentOutOfRangeException),
                    "Options.LayerKeptFractions['conv3'] must be in (0, 1]"),
                (new() { LayerKeptFractions = new Dictionary<string, double> { ["conv9"] = 0.5 } }, s_vgg, typeof(ArgumentException),
                    "Options.LayerKeptFractions names 'conv9', which writes no prunable channels of this vgg-small model (conv1, conv2, conv3, conv4, conv5, fc1)."),
                (new() { IgnoredLayers = new[] { "conv9" } }, s_vgg, typeof(ArgumentException), "Options.IgnoredLayers names 'conv9', which is not a layer of this vgg-small model"),
                (new() { Criterion = ChannelCriterion.BatchNormScale }, PrunerValidationModels.LeNet5, typeof(ArgumentException),
                    "Options.Criterion BatchNormScale ranks channels by their batch-norm scales, but this lenet5 model has no batch norm"),
                (new() { Allocation = (LayerAllocation)7 }, s_vgg, typeof(ArgumentOutOfRangeException), "Unknown allocation"),
            };
            foreach (var (options, model, exception, expected) in cases)
            {
                Exception ex = Assert.Throws<Exception>(() => s_ml.Transforms.PruneChannels(model, options));
                Assert.AreEqual(exception, ex.GetType(), ex.Message);
                StringAssert.Contains(ex.Message, expected);
            }

            var unreachable = Assert.ThrowsExactly<InvalidOperationException>(() =>
                s_ml.Transforms.PruneChannels(s_resnet, new ChannelPruner.Options { MacsReduction = 1000 }).Fit(s_train));
            StringAssert.Contains(unreachable.Message, "cannot be reached");
            StringAssert.Contains(unreachable.Message, "Lower Options.MacsReduction");
        }
    }

    /// <summary>A small LeNet-5 for option checks that need a network without batch norm.</summary>
    internal static class PrunerValidationModels
    {
        private static ITransformer? s_lenet5;

        public static ITransformer LeNet5
        {
            get
            {
                if (s_lenet5 is null)
                {
                    var ml = new MLContext(seed: 1);
                    s_lenet5 = Train(ml, SyntheticImages.Load(ml, 32), ImageClassifierArchitecture.LeNet5, epochs: 1);
                }
                return s_lenet5;
            }
        }
    }
}
