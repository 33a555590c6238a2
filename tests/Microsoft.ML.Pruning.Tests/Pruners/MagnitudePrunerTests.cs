// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Pruners;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using static Microsoft.ML.Pruning.Tests.Pruners.PrunerTestModels;

namespace Microsoft.ML.Pruning.Tests.Pruners
{
    [TestClass]
    public sealed class MagnitudePrunerTests
    {
        [TestMethod]
        public void PerLayerAndGlobalThresholdsKeepTheLargestWeights()
        {
            var ml = new MLContext(seed: 1);
            IDataView train = SyntheticImages.Load(ml, 128);
            ITransformer model = Train(ml, train, ImageClassifierArchitecture.LeNet300100, epochs: 2);
            var dense = Weights(model);
            var results = new List<ITransformer>();
            try
            {
                PruningReport? uniform = null, global = null;
                results.Add(ml.Transforms.PruneMagnitude(model, new MagnitudePruner.Options
                {
                    KeptFraction = 0.2,
                    Allocation = LayerAllocation.Uniform,
                    PruningCompleted = r => uniform = r,
                }).Fit(train));
                results.Add(ml.Transforms.PruneMagnitude(model, new MagnitudePruner.Options { KeptFraction = 0.2, PruningCompleted = r => global = r }).Fit(train));

                Assert.IsTrue(uniform!.Layers.All(l => Math.Abs(l.KeptFraction - 0.2) < 0.001), uniform.ToString());
                Assert.AreEqual(0.2, global!.KeptFraction, 0.001);
                Assert.IsFalse(global.Layers.All(l => Math.Abs(l.KeptFraction - 0.2) < 0.001), "one threshold gives unequal layer fractions");

                foreach (var (pruned, perLayer) in new[] { (results[0], true), (results[1], false) })
                {
                    var weights = Weights(pruned);
                    var layers = new[] { "fc1.weight", "fc2.weight", "fc3.weight" };
                    var keptMagnitudes = layers.Select(n => dense[n].Where((_, i) => weights[n][i] != 0).Select(Math.Abs)).ToArray();
                    var prunedMagnitudes = layers.Select(n => dense[n].Where((_, i) => weights[n][i] == 0).Select(Math.Abs)).ToArray();
                    for (int l = 0; l < layers.Length; l++)
                    {
                        CollectionAssert.AreEqual(dense[layers[l]].Where((_, i) => weights[layers[l]][i] != 0).ToArray(),
                            weights[layers[l]].Where(v => v != 0).ToArray(), "kept weights are unchanged");
                        if (perLayer)
                            Assert.IsGreaterThanOrEqualTo(prunedMagnitudes[l].Max(), keptMagnitudes[l].Min());
                    }
                    if (!perLayer)
                    {
                        // One threshold separates kept from pruned in every layer above its floor (a quarter of 0.2).
                        var free = Enumerable.Range(0, layers.Length).Where(l => global.Layers[l].KeptFraction > 0.2 / 4 + 0.001).ToArray();
                        Assert.IsNotEmpty(free);
                        Assert.IsGreaterThanOrEqualTo(free.SelectMany(l => prunedMagnitudes[l]).Max(), free.SelectMany(l => keptMagnitudes[l]).Min());
                    }
                }
            }
            finally
            {
                results.ForEach(DisposeAll);
                DisposeAll(model);
            }
        }

        [TestMethod]
        public void IterativePruningRetrainsBetweenRoundsAndReachesTheTarget()
        {
            var ml = new MLContext(seed: 2);
            IDataView train = SyntheticImages.Load(ml, 128);
            ITransformer model = Train(ml, train, ImageClassifierArchitecture.LeNet300100, epochs: 2);
            PruningReport? report = null;
            var options = new MagnitudePruner.Options
            {
                KeptFraction = 0.05,
                PruningRounds = 3,
                RetrainIterations = 10,
                LayerKeptFractions = new Dictionary<string, double> { ["fc3"] = 1 },
                PruningCompleted = r => report = r,
            };
            ITransformer pruned = ml.Transforms.PruneMagnitude(model, options).Fit(train);
            try
            {
                Assert.AreEqual(30, report!.RetrainingSteps, "two rounds in between and the final retraining");
                Assert.AreEqual(1.0, report.Layers.Single(l => l.Layer == "fc3").KeptFraction);
                long free = report.Layers.Where(l => l.Layer != "fc3").Sum(l => l.Weights);
                long kept = report.Layers.Where(l => l.Layer != "fc3").Sum(l => l.KeptWeights);
                Assert.AreEqual(0.05, (double)kept / free, 0.001);
                Assert.IsGreaterThan(0.8, Accuracy(ml, pruned, SyntheticImages.Load(ml, 100, seed: 4)));
            }
            finally
            {
                DisposeAll(pruned);
                DisposeAll(model);
            }
        }
    }
}
