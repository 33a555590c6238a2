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
using Microsoft.ML.Pruning.Pruners.Common;
using Microsoft.ML.Pruning.Pruners.LayerwiseObs;
using Microsoft.ML.Pruning.Reports;
using Microsoft.ML.Pruning.Training;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using TorchSharp;
using static Microsoft.ML.Pruning.Tests.Pruners.PrunerTestModels;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Tests.Pruners
{
    [TestClass]
    public sealed class LayerwiseObsPrunerTests
    {
        [TestMethod]
        public void PrunesToTheKeptFractionAndReturnsAModelOfTheSameShape()
        {
            var ml = new MLContext(seed: 1);
            IDataView train = SyntheticImages.Load(ml, 256);
            ITransformer model = Train(ml, train, ImageClassifierArchitecture.LeNet300100);
            var before = Weights(model);
            PruningReport? report = null;
            var options = new LayerwiseObsPruner.Options { KeptFraction = 0.1, PruningCompleted = r => report = r };
            ITransformer pruned = ml.Transforms.PruneLayerwiseObs(model, options).Fit(train);
            try
            {
                Assert.AreEqual(model.GetType(), pruned.GetType());
                Assert.IsNotNull(report);
                Assert.AreEqual(0.1, report.KeptFraction, 0.001);
                CollectionAssert.AreEqual(new[] { "fc1", "fc2", "fc3" }, report.Layers.Select(l => l.Layer).ToArray());
                Assert.IsTrue(report.Layers.All(l => l.RelativeError is >= 0 and < 1), report.ToString());

                ImageClassificationTransformer classifier = Classifier(pruned);
                long nonZero = classifier.Network.NamedParameters().Where(p => p.Name.EndsWith(".weight", StringComparison.Ordinal))
                    .Sum(p => p.Parameter.count_nonzero().item<long>());
                Assert.AreEqual(report.KeptWeights, nonZero);
                foreach (var (name, values) in Weights(model))
                    CollectionAssert.AreEqual(before[name], values, $"the trained model's {name} is untouched");

                ModelSummary dense = Classifier(model).GetSummary(), sparse = classifier.GetSummary();
                Assert.AreEqual(dense.Parameters, sparse.Parameters);
                Assert.IsLessThan(dense.NonZeroParameters / 5, sparse.NonZeroParameters);
                Assert.IsLessThan(dense.SerializedBytes / 4, sparse.SerializedBytes);

                IDataView test = SyntheticImages.Load(ml, 200, seed: 9);
                Assert.IsGreaterThan(0.9, Accuracy(ml, pruned, test));
            }
            finally
            {
                DisposeAll(pruned);
                DisposeAll(model);
            }
        }

        [TestMethod]
        public void ConvolutionsAndBatchNormArePrunedAndStatisticsRefreshed()
        {
            var ml = new MLContext(seed: 2);
            IDataView train = SyntheticImages.Load(ml, 192, height: 8, width: 8);
            ITransformer model = Train(ml, train, ImageClassifierArchitecture.VggSmall, epochs: 2);
            PruningReport? report = null;
            var options = new LayerwiseObsPruner.Options { KeptFraction = 0.3, Allocation = LayerAllocation.Uniform, PruningCompleted = r => report = r };
            ITransformer pruned = ml.Transforms.PruneLayerwiseObs(model, options).Fit(train);
            try
            {
                Assert.IsNotNull(report);
                Assert.IsTrue(report.Layers.All(l => Math.Abs(l.KeptFraction - 0.3) < 0.01), report.ToString());
                Assert.AreEqual(7, report.Layers.Count);
                float[] meanBefore = Classifier(model).Network.StateDictionary()["bn5.running_mean"].data<float>().ToArray();
                float[] meanAfter = Classifier(pruned).Network.StateDictionary()["bn5.running_mean"].data<float>().ToArray();
                CollectionAssert.AreNotEqual(meanBefore, meanAfter);
            }
            finally
            {
                DisposeAll(pruned);
                DisposeAll(model);
            }
        }

        [TestMethod]
        public void ConvolutionInputsAreUnfoldedInTheWeightsOrder()
        {
            // Σ_r w_rᵀ Ψ w_r must equal the mean over images and positions of Σ_r z_r², z the convolution's output.
            var ml = new MLContext(seed: 3);
            IDataView train = SyntheticImages.Load(ml, 64);
            ITransformer model = Train(ml, train, ImageClassifierArchitecture.LeNet5, epochs: 1);
            try
            {
                ClassifierNetwork network = Classifier(model).Network;
                PrunableLayer conv2 = PrunableLayer.Find(network).Single(l => l.Path == "conv2");
                using var scope = NewDisposeScope();
                Tensor images = randn(16, 1, 12, 12);
                Tensor? output = null;
                var hook = conv2.Module.register_forward_hook((module, input, result) =>
                {
                    output = result.detach().clone();
                    return result;
                });
                using (no_grad())
                {
                    network.Module.eval();
                    network.Forward(images);
                }
                hook.remove();
                double expected = output!.to(float64).square().sum(1).mean().item<double>();

                using var statistics = LayerInputStatistics.Collect(network, new[] { conv2 }, images, long.MaxValue, new Generator(1), default);
                Tensor psi = statistics.Psi(0);
                Tensor w = cat(new[] { conv2.Weight.detach().reshape(16, -1), conv2.Bias!.detach().unsqueeze(1) }, 1).to(float64);
                double actual = w.matmul(psi).mul(w).sum().item<double>();
                Assert.AreEqual(expected, actual, 1e-4 * expected);
                Assert.AreEqual(6 * 5 * 5 + 1, statistics.Dimension(0));
                Assert.AreEqual(16L * 2 * 2, statistics.Samples(0));
            }
            finally
            {
                DisposeAll(model);
            }
        }

        [TestMethod]
        public void PrunedWeightsStayZeroThroughRetrainingWithMomentumAndWeightDecay()
        {
            var ml = new MLContext(seed: 4);
            IDataView train = SyntheticImages.Load(ml, 256);
            ITransformer model = Train(ml, train, ImageClassifierArchitecture.LeNet300100);
            var pruneOnly = new LayerwiseObsPruner.Options { KeptFraction = 0.2 };
            ITransformer pruned = ml.Transforms.PruneLayerwiseObs(model, pruneOnly).Fit(train);
            var retrainedModels = new List<ITransformer>();
            try
            {
                var zeros = Weights(pruned).Where(p => p.Key.EndsWith(".weight", StringComparison.Ordinal))
                    .ToDictionary(p => p.Key, p => p.Value.Select(v => v == 0).ToArray());
                foreach (var optimizer in new[] { OptimizerKind.Sgd, OptimizerKind.Adam })
                {
                    PruningReport? report = null;
                    var options = new LayerwiseObsPruner.Options
                    {
                        KeptFraction = 0.2,
                        RetrainIterations = 25,
                        Optimizer = optimizer,
                        LearningRate = optimizer == OptimizerKind.Sgd ? 0.05 : 1e-3,
                        Momentum = 0.9,
                        WeightDecay = 0.05,
                        PruningCompleted = r => report = r,
                    };
                    ITransformer retrained = ml.Transforms.PruneLayerwiseObs(model, options).Fit(train);
                    retrainedModels.Add(retrained);
                    Assert.AreEqual(25, report!.RetrainingSteps);
                    var after = Weights(retrained);
                    var prunedWeights = Weights(pruned);
                    foreach (var (name, isZero) in zeros)
                    {
                        float[] values = after[name];
                        for (int i = 0; i < values.Length; i++)
                        {
                            if (isZero[i])
                                Assert.AreEqual(0, BitConverter.SingleToInt32Bits(values[i]), $"{optimizer}: {name}[{i}] must stay +0");
                            else
                                Assert.AreNotEqual(0f, values[i], $"{optimizer}: {name}[{i}] was kept");
                        }
                        CollectionAssert.AreNotEqual(prunedWeights[name], values, $"{optimizer}: {name} was retrained");
                    }
                }
            }
            finally
            {
                retrainedModels.ForEach(DisposeAll);
                DisposeAll(pruned);
                DisposeAll(model);
            }
        }

        [TestMethod]
        public void SavedPrunedModelLoadsWithIdenticalScoresAndAFifthOfTheSize()
        {
            var ml = new MLContext(seed: 5);
            IDataView train = SyntheticImages.Load(ml, 256);
            ITransformer model = Train(ml, train, ImageClassifierArchitecture.LeNet300100);
            ITransformer pruned = ml.Transforms.PruneLayerwiseObs(model, 0.07).Fit(train);
            string densePath = TempZip(), prunedPath = TempZip();
            try
            {
                ml.Model.Save(model, train.Schema, densePath);
                ml.Model.Save(pruned, train.Schema, prunedPath);
                Assert.IsLessThanOrEqualTo(new FileInfo(densePath).Length / 5, new FileInfo(prunedPath).Length);

                IDataView test = SyntheticImages.Load(ml, 50, seed: 8);
                float[][] before = pruned.Transform(test).GetColumn<float[]>("Score").ToArray();
                var fresh = new MLContext(seed: 9);
                ITransformer loaded = fresh.Model.Load(prunedPath, out _);
                try
                {
                    float[][] after = loaded.Transform(SyntheticImages.Load(fresh, 50, seed: 8)).GetColumn<float[]>("Score").ToArray();
                    for (int i = 0; i < before.Length; i++)
                        CollectionAssert.AreEqual(before[i], after[i], $"row {i}");
                    foreach (var (name, values) in Weights(pruned))
                        CollectionAssert.AreEqual(values, Weights(loaded)[name], name);
                }
                finally
                {
                    DisposeAll(loaded);
                }
            }
            finally
            {
                File.Delete(densePath);
                File.Delete(prunedPath);
                DisposeAll(pruned);
                DisposeAll(model);
            }
        }

        [TestMethod]
        public void ALoadedChainAndABareClassifierWithTextLabelsCanBePruned()
        {
            var ml = new MLContext(seed: 6);
            IDataView train = SyntheticImages.Load(ml, 128);
            ITransformer model = Train(ml, train, ImageClassifierArchitecture.LeNet300100, epochs: 2);
            string path = TempZip();
            var results = new List<ITransformer>();
            try
            {
                ml.Model.Save(model, train.Schema, path);
                ITransformer loaded = ml.Model.Load(path, out _);
                results.Add(loaded);
                ITransformer prunedChain = ml.Transforms.PruneLayerwiseObs(loaded, 0.3).Fit(train);
                results.Add(prunedChain);
                Assert.IsInstanceOfType<TransformerChain<ITransformer>>(prunedChain);
                Assert.AreEqual(3, ((IEnumerable<ITransformer>)prunedChain).Count());

                // The classifier alone: the data's Label column is text, matched to the class names for retraining.
                var options = new LayerwiseObsPruner.Options { KeptFraction = 0.3, RetrainIterations = 5 };
                ITransformer prunedClassifier = ml.Transforms.PruneLayerwiseObs(Classifier(model), options).Fit(train);
                results.Add(prunedClassifier);
                Assert.IsInstanceOfType<ImageClassificationTransformer>(prunedClassifier);
                var bad = SyntheticImages.Rows(8);
                bad[3].Label = "hat";
                var ex = Assert.ThrowsExactly<InvalidOperationException>(
                    () => ml.Transforms.PruneLayerwiseObs(Classifier(model), options).Fit(SyntheticImages.Load(ml, bad)));
                StringAssert.Contains(ex.Message, "Row 3 of the calibration data has label 'hat', which is not one of the model's classes (ankle, bag, coat, dress)");

            }
            finally
            {
                File.Delete(path);
                results.ForEach(DisposeAll);
                DisposeAll(model);
            }
        }

        [TestMethod]
        public void AToleranceStopsPruningALayerEarly()
        {
            var ml = new MLContext(seed: 7);
            IDataView train = SyntheticImages.Load(ml, 128);
            ITransformer model = Train(ml, train, ImageClassifierArchitecture.LeNet300100, epochs: 2);
            PruningReport? free = null, bounded = null;
            var results = new List<ITransformer>
            {
                ml.Transforms.PruneLayerwiseObs(model, new LayerwiseObsPruner.Options { KeptFraction = 0.05, PruningCompleted = r => free = r }).Fit(train),
                ml.Transforms.PruneLayerwiseObs(model, new LayerwiseObsPruner.Options
                {
                    KeptFraction = 0.05,
                    ReconstructionTolerance = 1e-4,
                    PruningCompleted = r => bounded = r,
                }).Fit(train),
            };
            try
            {
                Assert.IsGreaterThan(free!.KeptFraction, bounded!.KeptFraction);
                for (int i = 0; i < free.Layers.Count; i++)
                    Assert.IsLessThanOrEqualTo(free.Layers[i].RelativeError!.Value, bounded.Layers[i].RelativeError!.Value, bounded.ToString());
            }
            finally
            {
                results.ForEach(DisposeAll);
                DisposeAll(model);
            }
        }

        [TestMethod]
        public void TheSameSeedGivesTheSamePrunedModel()
        {
            var ml = new MLContext(seed: 8);
            IDataView train = SyntheticImages.Load(ml, 300);
            ITransformer model = Train(ml, train, ImageClassifierArchitecture.LeNet5, epochs: 1);
            var options = new LayerwiseObsPruner.Options { KeptFraction = 0.2, CalibrationImages = 100, MaxPatchesPerLayer = 2000 };
            ITransformer first = new MLContext(seed: 3).Transforms.PruneLayerwiseObs(model, options).Fit(train);
            ITransformer second = new MLContext(seed: 3).Transforms.PruneLayerwiseObs(model, options).Fit(train);
            try
            {
                var a = Weights(first);
                foreach (var (name, values) in Weights(second))
                    CollectionAssert.AreEqual(a[name], values, name);
            }
            finally
            {
                DisposeAll(first);
                DisposeAll(second);
                DisposeAll(model);
            }
        }
    }
}
