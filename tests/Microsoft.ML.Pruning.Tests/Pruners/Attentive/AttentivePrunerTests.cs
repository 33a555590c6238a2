// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Pruners;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using static Microsoft.ML.Pruning.Tests.Pruners.PrunerTestModels;

namespace Microsoft.ML.Pruning.Tests.Pruners.Attentive
{
    [TestClass]
    public sealed class AttentivePrunerTests
    {
        private static MLContext s_ml = null!;
        private static IDataView s_train = null!;
        private static ITransformer s_model = null!;

        [ClassInitialize]
        public static void TrainOnce(TestContext context)
        {
            s_ml = new MLContext(seed: 1);
            s_train = SyntheticImages.Load(s_ml, 128);
            s_model = Train(s_ml, s_train, ImageClassifierArchitecture.LeNet5, epochs: 2);
        }

        [ClassCleanup]
        public static void Cleanup() => DisposeAll(s_model);

        [TestMethod]
        public void PrunedModelIsSparseAndSavesAndLoads()
        {
            PruningReport? report = null;
            ITransformer pruned = s_ml.Transforms.PruneAttentive(s_model, new AttentivePruner.Options
            {
                KeptFraction = 0.2,
                PruningCompleted = r => report = r,
            }).Fit(s_train);
            string zip = TempZip();
            try
            {
                Assert.AreEqual("attentive", report!.Method);
                Assert.AreEqual(0.2, report.KeptFraction, 0.001);
                Assert.AreEqual(128, report.CalibrationImages);
                Assert.IsGreaterThan(0, report.CalibrationImagesPerSecond!.Value);
                var dense = Weights(s_model);
                var weights = Weights(pruned);
                StringAssert.Contains(report.ToString(), "selected by the attention");
                foreach (var layer in report.Layers)
                {
                    Assert.IsTrue(layer.SelectedFraction is > 0 and <= 1, $"{layer.Layer}: selected {layer.SelectedFraction}");
                    float[] w = weights[layer.Layer + ".weight"];
                    Assert.AreEqual(layer.KeptWeights, w.Count(v => v != 0), layer.Layer);
                    // Kept weights keep their trained values.
                    CollectionAssert.AreEqual(dense[layer.Layer + ".weight"].Where((_, i) => w[i] != 0).ToArray(), w.Where(v => v != 0).ToArray());
                }

                s_ml.Model.Save(pruned, s_train.Schema, zip);
                ITransformer loaded = s_ml.Model.Load(zip, out _);
                try
                {
                    var reloaded = Weights(loaded);
                    foreach (var (name, values) in weights)
                        CollectionAssert.AreEqual(values, reloaded[name], name);
                    float[][] before = s_ml.Data.CreateEnumerable<Scored>(pruned.Transform(s_train), reuseRowObject: false).Select(r => r.Score).ToArray();
                    float[][] after = s_ml.Data.CreateEnumerable<Scored>(loaded.Transform(s_train), reuseRowObject: false).Select(r => r.Score).ToArray();
                    for (int i = 0; i < before.Length; i++)
                        CollectionAssert.AreEqual(before[i], after[i]);
                    Assert.AreEqual(report.KeptWeights + Classifier(loaded).Network.NamedParameters().Where(p => p.Name.EndsWith(".bias", StringComparison.Ordinal)).Sum(p => p.Parameter.numel()),
                        Classifier(loaded).GetSummary().NonZeroParameters, 3, "non-zero parameters: kept weights and (almost all) biases");
                }
                finally
                {
                    DisposeAll(loaded);
                }
            }
            finally
            {
                System.IO.File.Delete(zip);
                DisposeAll(pruned);
            }
        }

        [TestMethod]
        public void UniformHitsFromPredictionInRoundsReachTheTarget()
        {
            PruningReport? report = null;
            ITransformer pruned = s_ml.Transforms.PruneAttentive(s_model, new AttentivePruner.Options
            {
                KeptFraction = 0.1,
                Allocation = LayerAllocation.Uniform,
                Score = AttentionScore.Hits,
                Start = AttentionStart.Prediction,
                PruningRounds = 2,
                RetrainIterations = 4,
                CalibrationImages = 64,
                LayerKeptFractions = new Dictionary<string, double> { ["fc3"] = 0.5 },
                PruningCompleted = r => report = r,
            }).Fit(s_train);
            try
            {
                Assert.AreEqual(8, report!.RetrainingSteps, "one round in between and the final retraining");
                Assert.AreEqual(64, report.CalibrationImages);
                foreach (var layer in report.Layers)
                    Assert.AreEqual(layer.Layer == "fc3" ? 0.5 : 0.1, layer.KeptFraction, 0.01, layer.Layer);
            }
            finally
            {
                DisposeAll(pruned);
            }
        }

        [TestMethod]
        public void MagnitudeBudgetsGiveEveryLayerMagnitudePruningsCount()
        {
            PruningReport? attentive = null, magnitude = null;
            ITransformer byAttention = s_ml.Transforms.PruneAttentive(s_model, new AttentivePruner.Options
            {
                KeptFraction = 0.05,
                Score = AttentionScore.MassMagnitude,
                LayerBudgets = AttentionBudgets.Magnitude,
                CalibrationImages = 64,
                PruningCompleted = r => attentive = r,
            }).Fit(s_train);
            ITransformer byMagnitude = s_ml.Transforms.PruneMagnitude(s_model, new MagnitudePruner.Options
            {
                KeptFraction = 0.05,
                PruningCompleted = r => magnitude = r,
            }).Fit(s_train);
            try
            {
                CollectionAssert.AreEqual(magnitude!.Layers.Select(l => (l.Layer, l.KeptWeights)).ToArray(), attentive!.Layers.Select(l => (l.Layer, l.KeptWeights)).ToArray());
                // The attention's own shares give the layers other budgets.
                Assert.AreNotEqual(magnitude.Layers.Single(l => l.Layer == "fc1").KeptWeights, Kept(AttentionBudgets.Attention, "fc1"));
                // The same counts, other connections: the attention chooses within each layer.
                var chosen = Weights(byAttention)["fc1.weight"];
                var largest = Weights(byMagnitude)["fc1.weight"];
                Assert.IsTrue(chosen.Where((v, i) => (v != 0) != (largest[i] != 0)).Any(), "fc1 keeps other connections than its largest weights");
            }
            finally
            {
                DisposeAll(byAttention);
                DisposeAll(byMagnitude);
            }

            static long Kept(AttentionBudgets budgets, string layer)
            {
                PruningReport? report = null;
                ITransformer pruned = s_ml.Transforms.PruneAttentive(s_model, new AttentivePruner.Options
                {
                    KeptFraction = 0.05, Score = AttentionScore.MassMagnitude, LayerBudgets = budgets, CalibrationImages = 64, PruningCompleted = r => report = r,
                }).Fit(s_train);
                DisposeAll(pruned);
                return report!.Layers.Single(l => l.Layer == layer).KeptWeights;
            }
        }

        [TestMethod]
        public void BadOptionsNameTheOption()
        {
            var cases = new (AttentivePruner.Options Options, Type Exception, string Expected)[]
            {
                (new() { KeptFraction = 0 }, typeof(ArgumentOutOfRangeException), "Options.KeptFraction must be in (0, 1]"),
                (new() { CalibrationImages = 0 }, typeof(ArgumentOutOfRangeException), "Options.CalibrationImages must be at least 1"),
                (new() { PruningRounds = 0 }, typeof(ArgumentOutOfRangeException), "Options.PruningRounds must be at least 1"),
                (new() { PruningRounds = 2 }, typeof(ArgumentException), "Options.PruningRounds is 2, but rounds of pruning need retraining in between"),
                (new() { Score = (AttentionScore)7 }, typeof(ArgumentOutOfRangeException), "Options.Score has an unknown value"),
                (new() { Start = (AttentionStart)7 }, typeof(ArgumentOutOfRangeException), "Options.Start has an unknown value"),
                (new() { Allocation = (LayerAllocation)7 }, typeof(ArgumentOutOfRangeException), "Options.Allocation has an unknown value"),
                (new() { LayerBudgets = (AttentionBudgets)7 }, typeof(ArgumentOutOfRangeException), "Options.LayerBudgets has an unknown value"),
                (new() { LayerBudgets = AttentionBudgets.Magnitude, Allocation = LayerAllocation.Uniform }, typeof(ArgumentException),
                    "Options.LayerBudgets = Magnitude sets each layer's budget, which needs Options.Allocation = Global; got Uniform."),
                (new() { LayerKeptFractions = new Dictionary<string, double> { ["conv9"] = 0.5 } }, typeof(ArgumentException),
                    "Options.LayerKeptFractions names 'conv9', which is not a prunable layer of this lenet5 model (conv1, conv2, fc1, fc2, fc3)."),
            };
            foreach (var (options, exception, expected) in cases)
            {
                Exception ex = Assert.Throws<Exception>(() => s_ml.Transforms.PruneAttentive(s_model, options));
                Assert.AreEqual(exception, ex.GetType(), ex.Message);
                StringAssert.Contains(ex.Message, expected);
            }

            // Starting from the labels needs them.
            var missing = Assert.ThrowsExactly<ArgumentException>(() => s_ml.Transforms.PruneAttentive(s_model, new AttentivePruner.Options { LabelColumnName = "Class" }).Fit(s_train));
            StringAssert.Contains(missing.Message, "The top-down attention from the labels (Options.Start = Label) needs labels, but the calibration data has no label column 'Class'");
        }

        private sealed class Scored
        {
            public float[] Score { get; set; } = Array.Empty<float>();
        }
    }
}
