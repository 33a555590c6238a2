// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Reports;
using Microsoft.ML.Pruning.Pruners;
using Microsoft.ML.Pruning.Pruners.ShiftAttention;
using Microsoft.ML.Pruning.Training;
using Microsoft.VisualStudio.TestTools.UnitTesting;

namespace Microsoft.ML.Pruning.Tests.Pruners.ShiftAttention
{
    [TestClass]
    public sealed class ShiftAttentionTrainerTests
    {
        private static ShiftAttentionTrainer.Options Quick(ConvolutionKind kind = ConvolutionKind.ShiftAttention, int epochs = 3,
            ImageClassifierArchitecture architecture = ImageClassifierArchitecture.VggSmall) => new()
        {
            Training = new ImageClassifierTrainer.Options { Architecture = architecture, Epochs = epochs, BatchSize = 32 },
            LayerKind = kind,
        };

        private static (ITransformer Model, IDataView Train) Fit(MLContext ml, ShiftAttentionTrainer.Options options, int rows = 192, int size = 8)
        {
            IDataView train = SyntheticImages.Load(ml, rows, height: size, width: size);
            var pipeline = SyntheticImages.MapLabel(ml)
                .Append(ml.Transforms.PruneAttention(options))
                .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"));
            return (pipeline.Fit(train), train);
        }

        private static ImageClassificationTransformer Classifier(ITransformer model)
            => ((IEnumerable<ITransformer>)model).OfType<ImageClassificationTransformer>().Single();

        [TestMethod]
        public void TrainsCompactsAndReportsTheTemperatureAndOneHotness()
        {
            var ml = new MLContext(seed: 1);
            var messages = new List<string>();
            ml.Log += (_, e) => { lock (messages) messages.Add(e.Message); };
            var epochs = new List<ShiftAttentionEpochMetrics>();
            ModelSummary? trained = null, compact = null;
            ShiftAttentionTrainer.Options options = Quick();
            options.AttentionEpochCompleted = epochs.Add;
            options.Compacted = (before, after) => (trained, compact) = (before, after);
            options.Training.ValidationSet = SyntheticImages.MapLabel(ml).Fit(SyntheticImages.Load(ml, 40, height: 8, width: 8)).Transform(SyntheticImages.Load(ml, 40, height: 8, width: 8, seed: 3));
            var (model, _) = Fit(ml, options);
            try
            {
                CollectionAssert.AreEqual(Enumerable.Range(1, options.Training.Epochs).ToArray(), epochs.Select(e => e.Epoch).ToArray());
                Assert.AreEqual(70.0, epochs[^1].Temperature, "the temperature reaches its final value at the last step");
                Assert.IsTrue(epochs.Zip(epochs.Skip(1)).All(p => p.Second.Temperature > p.First.Temperature));
                Assert.IsTrue(epochs.All(e => e.MeanMaxProbability > 1.0 / 9 && e.MeanMaxProbability <= 1));
                Assert.IsTrue(messages.Any(m => m.Contains($"epoch {epochs.Count}/{epochs.Count}: loss", StringComparison.Ordinal) && m.Contains("temperature 70", StringComparison.Ordinal)
                    && m.Contains("attention mean max-probability", StringComparison.Ordinal)), string.Join("\n", messages.Where(m => m.Contains("epoch", StringComparison.Ordinal))));
                Assert.IsTrue(messages.Any(m => m.Contains("Hardened the attention (ArgMax)", StringComparison.Ordinal) && m.Contains("% hardened", StringComparison.Ordinal)));
                Assert.IsTrue(messages.Any(m => m.Contains("Compact network:", StringComparison.Ordinal) && m.Contains("ShiftPW 3x3 32->64", StringComparison.Ordinal)));

                NetworkDefinition definition = Classifier(model).Network.Definition;
                Assert.AreEqual(4, definition.Flatten().Count(l => l.Layer is ShiftPointwiseConv2dLayer { Shared: false }));
                Assert.IsFalse(definition.Flatten().Any(l => l.Layer is ShiftAttentionConv2dLayer));
                Assert.IsNotNull(trained);
                Assert.IsNotNull(compact);
                Assert.IsLessThan(trained.MultiplyAccumulates, compact.MultiplyAccumulates);

                IDataView scored = model.Transform(SyntheticImages.Load(ml, 200, height: 8, width: 8, seed: 99));
                var metrics = ml.MulticlassClassification.Evaluate(SyntheticImages.MapLabel(ml).Fit(scored).Transform(scored));
                Assert.IsGreaterThan(0.9, metrics.MicroAccuracy, string.Join("\n", messages.Where(m => m.Contains("epoch", StringComparison.Ordinal) || m.Contains("Hardened", StringComparison.Ordinal))));
            }
            finally
            {
                DisposeAll(model);
            }
        }

        [TestMethod]
        public void TheCompactModelSavesAndLoadsWithIdenticalScoresInASmallerZip()
        {
            var ml = new MLContext(seed: 3);
            ShiftAttentionTrainer.Options options = Quick(epochs: 1);
            options.Hardening = AttentionHardening.Round;
            options.FineTuneEpochs = 1;
            var (model, train) = Fit(ml, options);
            IDataView test = SyntheticImages.Load(ml, 40, height: 8, width: 8, seed: 5);
            float[][] before = model.Transform(test).GetColumn<float[]>("Score").ToArray();
            string path = TempZip(), convPath = TempZip();
            try
            {
                ml.Model.Save(model, train.Schema, path);
                var fresh = new MLContext(seed: 42);
                ITransformer loaded = fresh.Model.Load(path, out _);
                ImageClassificationTransformer classifier = Classifier(loaded);
                Assert.IsTrue(classifier.Network.Definition.Flatten().Any(l => l.Layer is ShiftPointwiseConv2dLayer));
                Assert.IsTrue(classifier.Network.StateDictionary()["conv2.shift"].dtype == TorchSharp.torch.ScalarType.Byte);
                float[][] after = loaded.Transform(SyntheticImages.Load(fresh, 40, height: 8, width: 8, seed: 5)).GetColumn<float[]>("Score").ToArray();
                for (int i = 0; i < before.Length; i++)
                    CollectionAssert.AreEqual(before[i], after[i], $"row {i}");
                DisposeAll(loaded);

                // The same network as plain convolutions, saved the same way.
                var conv = SyntheticImages.MapLabel(ml)
                    .Append(ml.MulticlassClassification.Trainers.ImageClassifier(new ImageClassifierTrainer.Options { Architecture = ImageClassifierArchitecture.VggSmall, Epochs = 1, BatchSize = 32 }))
                    .Fit(train);
                ml.Model.Save(conv, train.Schema, convPath);
                DisposeAll(conv);
                // The converted layers hold 138,240 of the 3x3 weights (553 KB as float32); at least 8/9 of that must go.
                long saved = new FileInfo(convPath).Length - new FileInfo(path).Length;
                Assert.IsGreaterThan(400_000L, saved, $"the zip shrank by {saved} bytes");
            }
            finally
            {
                File.Delete(path);
                File.Delete(convPath);
                DisposeAll(model);
            }
        }

        [TestMethod]
        public void TheSharedVariantAndResNet20TrainAndCompact()
        {
            var ml = new MLContext(seed: 2);
            ShiftAttentionTrainer.Options options = Quick(ConvolutionKind.ShiftAttentionShared, epochs: 1, ImageClassifierArchitecture.ResNet20);
            options.KernelSize = 5;
            var (model, _) = Fit(ml, options, rows: 64);
            try
            {
                NetworkDefinition definition = Classifier(model).Network.Definition;
                var layers = definition.Flatten().Select(l => l.Layer).OfType<ShiftPointwiseConv2dLayer>().ToList();
                Assert.HasCount(18, layers);
                Assert.IsTrue(layers.All(l => l.Shared && l.KernelSize == 5 && l.Bias));
                Assert.IsFalse(definition.Flatten().Any(l => l.Path.Contains(".body.bn", StringComparison.Ordinal)), "body batch norms are folded");
                CollectionAssert.AreEqual(new long[] { 16 }, Classifier(model).Network.StateDictionary()["stage1_0.body.conv1.shift"].shape);
                Assert.HasCount(64, model.Transform(SyntheticImages.Load(ml, 64, height: 8, width: 8)).GetColumn<float[]>("Score").ToList());
            }
            finally
            {
                DisposeAll(model);
            }
        }

        [TestMethod]
        public void TheSameSeedGivesTheSameCompactModel()
        {
            float[] Weights(int seed)
            {
                var ml = new MLContext(seed: seed);
                var (model, _) = Fit(ml, Quick(epochs: 1), rows: 64);
                float[] weights = Classifier(model).Network.StateDictionary()["conv3.weight"].data<float>().ToArray();
                byte[] shifts = Classifier(model).Network.StateDictionary()["conv3.shift"].data<byte>().ToArray();
                DisposeAll(model);
                return weights.Concat(shifts.Select(s => (float)s)).ToArray();
            }

            CollectionAssert.AreEqual(Weights(4), Weights(4));
        }

        [TestMethod]
        public void TheFixedShiftBaselineTrainsWithTheImageClassifier()
        {
            var ml = new MLContext(seed: 1);
            var options = new ImageClassifierTrainer.Options { Architecture = ImageClassifierArchitecture.VggSmall, Convolution = ConvolutionKind.Shift, Epochs = 3, BatchSize = 32 };
            IDataView train = SyntheticImages.Load(ml, 192, height: 8, width: 8);
            var model = SyntheticImages.MapLabel(ml).Append(ml.MulticlassClassification.Trainers.ImageClassifier(options)).Fit(train);
            try
            {
                Assert.AreEqual(4, Classifier(model).Network.Definition.Flatten().Count(l => l.Layer is ShiftConv2dLayer));
                var metrics = ml.MulticlassClassification.Evaluate(model.Transform(SyntheticImages.Load(ml, 200, height: 8, width: 8, seed: 99)));
                Assert.IsGreaterThan(0.9, metrics.MicroAccuracy);
            }
            finally
            {
                DisposeAll(model);
            }
        }

        [TestMethod]
        public void InvalidOptionsFailNamingTheOption()
        {
            var ml = new MLContext(seed: 1);
            var cases = new (Action<ShiftAttentionTrainer.Options> Set, string Parameter, string Expected)[]
            {
                (o => o.FinalTemperature = 10, "FinalTemperature", "Options.FinalTemperature must be a number at least Options.InitialTemperature (20); got 10."),
                (o => o.InitialTemperature = 0, "InitialTemperature", "Options.InitialTemperature must be a positive number; got 0."),
                (o => o.KernelSize = 4, "KernelSize", "Options.KernelSize must be odd, from 1 to 15; got 4."),
                (o => o.KernelSize = 0, "KernelSize", "Options.KernelSize must be odd, from 1 to 15; got 0."),
                (o => o.KernelSize = -3, "KernelSize", "Options.KernelSize must be odd, from 1 to 15; got -3."),
                (o => o.LayerKind = (ConvolutionKind)42, "LayerKind", "Options.LayerKind 42 is not a known layer kind"),
                (o => o.LayerKind = ConvolutionKind.Shift, "LayerKind", "Options.LayerKind must be ShiftAttention or ShiftAttentionShared; got Shift"),
                (o => o.Hardening = (AttentionHardening)7, "Hardening", "Unknown hardening."),
                (o => o.FineTuneEpochs = -1, "FineTuneEpochs", "Options.FineTuneEpochs must be zero or positive"),
                (o => o.FineTuneLearningRate = 0, "FineTuneLearningRate", "Options.FineTuneLearningRate must be a positive number"),
                (o => o.Training.Architecture = ImageClassifierArchitecture.LeNet5, "Training.Architecture", "must be VggSmall or ResNet20"),
                (o => o.Training.Epochs = 0, "Epochs", "Options.Epochs must be at least 1"),
            };
            foreach (var (set, parameter, expected) in cases)
            {
                ShiftAttentionTrainer.Options options = Quick();
                set(options);
                var ex = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Transforms.PruneAttention(options), expected);
                StringAssert.Contains(ex.Message, expected);
                Assert.AreEqual(parameter, ex.ParamName);
            }

            ShiftAttentionTrainer.Options conflicting = Quick();
            conflicting.Training.Convolution = ConvolutionKind.Shift;
            StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => ml.Transforms.PruneAttention(conflicting)).Message,
                "Options.Training.Convolution must stay Convolution");

            var attentionInClassifier = new ImageClassifierTrainer.Options { Architecture = ImageClassifierArchitecture.VggSmall, Convolution = ConvolutionKind.ShiftAttention };
            StringAssert.Contains(Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.MulticlassClassification.Trainers.ImageClassifier(attentionInClassifier)).Message,
                "mlContext.Transforms.PruneAttention");
            var unknown = new ImageClassifierTrainer.Options { Architecture = ImageClassifierArchitecture.VggSmall, Convolution = (ConvolutionKind)9 };
            Assert.AreEqual("Convolution", Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.MulticlassClassification.Trainers.ImageClassifier(unknown)).ParamName);
        }

        [TestMethod]
        public void ALabelThatIsNotAKeyIsRejectedAsByTheClassifier()
        {
            var ml = new MLContext(seed: 1);
            var ex = Assert.ThrowsExactly<ArgumentException>(() => ml.Transforms.PruneAttention(Quick(epochs: 1)).Fit(SyntheticImages.Load(ml, 16, height: 8, width: 8)));
            StringAssert.Contains(ex.Message, "Label column 'Label' must be a key type");
        }

        private static string TempZip() => Path.Combine(Path.GetTempPath(), "pruning-sal-" + Guid.NewGuid().ToString("N") + ".zip");

        private static void DisposeAll(ITransformer model)
        {
            if (model is IEnumerable<ITransformer> chain)
            {
                foreach (var part in chain)
                    (part as IDisposable)?.Dispose();
            }
            (model as IDisposable)?.Dispose();
        }
    }
}
