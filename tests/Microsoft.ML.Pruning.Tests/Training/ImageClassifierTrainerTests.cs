// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.IO;
using System.IO.Compression;
using System.Linq;
using System.Threading;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Training;
using Microsoft.VisualStudio.TestTools.UnitTesting;

namespace Microsoft.ML.Pruning.Tests.Training
{
    [TestClass]
    public sealed class ImageClassifierTrainerTests
    {
        public sealed class Prediction
        {
            public string PredictedLabel { get; set; } = "";

            public float[] Score { get; set; } = Array.Empty<float>();
        }

        private static ImageClassifierTrainer.Options Quick(ImageClassifierArchitecture architecture, int epochs = 4) => new()
        {
            Architecture = architecture,
            Epochs = epochs,
            BatchSize = 32,
        };

        private static (ITransformer Model, IDataView Train) Fit(MLContext ml, ImageClassifierTrainer.Options options, int rows = 256, int size = 12)
        {
            IDataView train = SyntheticImages.Load(ml, rows, height: size, width: size);
            var pipeline = SyntheticImages.MapLabel(ml)
                .Append(ml.MulticlassClassification.Trainers.ImageClassifier(options))
                .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"));
            return (pipeline.Fit(train), train);
        }

        [TestMethod]
        public void TrainsAClassifierThatEvaluatesWithStandardColumns()
        {
            var ml = new MLContext(seed: 1);
            var (model, _) = Fit(ml, Quick(ImageClassifierArchitecture.LeNet300100));
            IDataView scored = model.Transform(SyntheticImages.Load(ml, 200, seed: 99));

            DataViewSchema.Column score = scored.Schema["Score"];
            Assert.AreEqual(new VectorDataViewType(NumberDataViewType.Single, 4), score.Type);
            VBuffer<ReadOnlyMemory<char>> slotNames = default;
            score.GetSlotNames(ref slotNames);
            CollectionAssert.AreEqual(SyntheticImages.ClassNames, slotNames.DenseValues().Select(n => n.ToString()).ToArray());
            Assert.AreEqual(TextDataViewType.Instance, scored.Schema["PredictedLabel"].Type);

            var metrics = ml.MulticlassClassification.Evaluate(SyntheticImages.MapLabel(ml).Fit(scored).Transform(scored));
            Assert.IsGreaterThan(0.95, metrics.MicroAccuracy);
            DisposeAll(model);
        }

        [TestMethod]
        public void PredictedLabelIsAKeyWithTheLabelValuesBeforeMapKeyToValue()
        {
            var ml = new MLContext(seed: 1);
            IDataView train = SyntheticImages.Load(ml, 64);
            var model = SyntheticImages.MapLabel(ml).Append(ml.MulticlassClassification.Trainers.ImageClassifier(Quick(ImageClassifierArchitecture.LeNet300100, 1))).Fit(train);
            DataViewSchema.Column predicted = model.Transform(train).Schema["PredictedLabel"];
            Assert.AreEqual(new KeyDataViewType(typeof(uint), 4), predicted.Type);
            VBuffer<ReadOnlyMemory<char>> keys = default;
            predicted.GetKeyValues(ref keys);
            CollectionAssert.AreEqual(SyntheticImages.ClassNames, keys.DenseValues().Select(k => k.ToString()).ToArray());
            DisposeAll(model);
        }

        [TestMethod]
        public void SavedModelLoadsAsItsOwnTypeInAFreshContextWithIdenticalScores()
        {
            var ml = new MLContext(seed: 3);
            var (model, train) = Fit(ml, Quick(ImageClassifierArchitecture.LeNet5, 2));
            IDataView test = SyntheticImages.Load(ml, 50, seed: 5);
            float[][] before = model.Transform(test).GetColumn<float[]>("Score").ToArray();
            string path = TempZip();
            try
            {
                ml.Model.Save(model, train.Schema, path);
                var fresh = new MLContext(seed: 42);
                ITransformer loaded = fresh.Model.Load(path, out DataViewSchema inputSchema);
                Assert.IsNotNull(inputSchema.GetColumnOrNull("Features"));
                Assert.AreEqual(1, ((IEnumerable<ITransformer>)loaded).OfType<ImageClassificationTransformer>().Count());

                float[][] after = loaded.Transform(SyntheticImages.Load(fresh, 50, seed: 5)).GetColumn<float[]>("Score").ToArray();
                Assert.AreEqual(before.Length, after.Length);
                for (int i = 0; i < before.Length; i++)
                    CollectionAssert.AreEqual(before[i], after[i], $"row {i}");

                var engine = fresh.Model.CreatePredictionEngine<ImageRow, Prediction>(loaded);
                ImageRow row = SyntheticImages.Rows(1, seed: 11)[0];
                Prediction prediction = engine.Predict(row);
                Assert.AreEqual(row.Label, prediction.PredictedLabel);
                Assert.AreEqual(4, prediction.Score.Length);
                Assert.AreEqual(1.0, prediction.Score.Sum(), 1e-5);
                DisposeAll(loaded);
            }
            finally
            {
                File.Delete(path);
                DisposeAll(model);
            }
        }

        [TestMethod]
        public void TheSameSeedGivesTheSameModelAndAnotherSeedAnother()
        {
            float[] Weights(int seed)
            {
                var ml = new MLContext(seed: seed);
                var options = Quick(ImageClassifierArchitecture.VggSmall, 1);
                options.RandomCropPadding = 1;
                options.HorizontalFlip = true;
                var (model, _) = Fit(ml, options, rows: 96, size: 8);
                var classifier = ((IEnumerable<ITransformer>)model).OfType<ImageClassificationTransformer>().Single();
                float[] weights = classifier.Network.StateDictionary()["fc2.weight"].data<float>().ToArray();
                DisposeAll(model);
                return weights;
            }

            float[] first = Weights(5), second = Weights(5), other = Weights(6);
            CollectionAssert.AreEqual(first, second);
            CollectionAssert.AreNotEqual(first, other);
        }

        [TestMethod]
        public void ProgressGoesToTheLogAndTheCallback()
        {
            var ml = new MLContext(seed: 1);
            var messages = new List<string>();
            ml.Log += (_, e) => { lock (messages) messages.Add(e.Message); };
            var epochs = new List<TrainingEpochMetrics>();
            var options = Quick(ImageClassifierArchitecture.LeNet300100, 3);
            options.EpochCompleted = epochs.Add;
            options.ValidationSet = SyntheticImages.MapLabel(ml).Fit(SyntheticImages.Load(ml, 40)).Transform(SyntheticImages.Load(ml, 40, seed: 3));
            DisposeAll(Fit(ml, options).Model);

            CollectionAssert.AreEqual(new[] { 1, 2, 3 }, epochs.Select(e => e.Epoch).ToArray());
            Assert.IsTrue(epochs.All(e => e.Epochs == 3 && e.ImagesPerSecond > 0 && e.ValidationAccuracy is >= 0 and <= 1));
            Assert.IsTrue(messages.Any(m => m.Contains("epoch 3/3: loss", StringComparison.Ordinal)), string.Join("\n", messages.TakeLast(5)));
        }

        [TestMethod]
        public void ACancelledTokenStopsTraining()
        {
            var ml = new MLContext(seed: 1);
            using var cancellation = new CancellationTokenSource();
            cancellation.Cancel();
            var options = Quick(ImageClassifierArchitecture.LeNet300100);
            options.CancellationToken = cancellation.Token;
            Assert.ThrowsExactly<OperationCanceledException>(() => Fit(ml, options));
        }

        [TestMethod]
        public void AFlatFeatureVectorNeedsAnImageShape()
        {
            var ml = new MLContext(seed: 1);
            var rows = SyntheticImages.Rows(64);
            SchemaDefinition schema = SchemaDefinition.Create(typeof(ImageRow));
            schema[nameof(ImageRow.Features)].ColumnType = new VectorDataViewType(NumberDataViewType.Single, 144);
            IDataView flat = ml.Data.LoadFromEnumerable(rows, schema);
            var trainer = SyntheticImages.MapLabel(ml).Append(ml.MulticlassClassification.Trainers.ImageClassifier(Quick(ImageClassifierArchitecture.LeNet5, 1)));
            var ex = Assert.ThrowsExactly<ArgumentException>(() => trainer.Fit(flat));
            StringAssert.Contains(ex.Message, "a flat vector does not say the image's channels, height and width");

            var withShape = Quick(ImageClassifierArchitecture.LeNet5, 1);
            withShape.ImageShape = new ImageShape(1, 12, 12);
            DisposeAll(SyntheticImages.MapLabel(ml).Append(ml.MulticlassClassification.Trainers.ImageClassifier(withShape)).Fit(flat));

            var wrongShape = Quick(ImageClassifierArchitecture.LeNet5, 1);
            wrongShape.ImageShape = new ImageShape(3, 12, 12);
            ex = Assert.ThrowsExactly<ArgumentException>(() => SyntheticImages.MapLabel(ml).Append(ml.MulticlassClassification.Trainers.ImageClassifier(wrongShape)).Fit(flat));
            StringAssert.Contains(ex.Message, "has 144 values per row, but the image shape 3x12x12 needs 432");
        }

        [TestMethod]
        public void ALabelThatIsNotAKeyIsRejectedWithTheFix()
        {
            var ml = new MLContext(seed: 1);
            var trainer = ml.MulticlassClassification.Trainers.ImageClassifier(Quick(ImageClassifierArchitecture.LeNet300100, 1));
            var ex = Assert.ThrowsExactly<ArgumentException>(() => trainer.Fit(SyntheticImages.Load(ml, 16)));
            StringAssert.Contains(ex.Message, "Label column 'Label' must be a key type");
            StringAssert.Contains(ex.Message, "MapValueToKey(\"Label\")");
        }

        [TestMethod]
        public void AMissingFeatureColumnIsNamed()
        {
            var ml = new MLContext(seed: 1);
            var options = Quick(ImageClassifierArchitecture.LeNet300100, 1);
            options.FeatureColumnName = "Pixels";
            var ex = Assert.Throws<ArgumentException>(() => Fit(ml, options));
            StringAssert.Contains(ex.Message, "no feature column 'Pixels'");
        }

        [TestMethod]
        public void EmptyDataIsRejected()
        {
            var ml = new MLContext(seed: 1);
            IDataView labelled = SyntheticImages.MapLabel(ml).Fit(SyntheticImages.Load(ml, 8)).Transform(SyntheticImages.Load(ml, 8));
            IDataView empty = ml.Data.FilterRowsByMissingValues(ml.Data.SkipRows(labelled, 8), "Label");
            var trainer = ml.MulticlassClassification.Trainers.ImageClassifier(Quick(ImageClassifierArchitecture.LeNet300100, 1));
            var ex = Assert.ThrowsExactly<InvalidOperationException>(() => trainer.Fit(empty));
            StringAssert.Contains(ex.Message, "The training data has no rows");
        }

        [TestMethod]
        public void NaNPixelsAreRejectedWithTheRow()
        {
            var ml = new MLContext(seed: 1);
            var rows = SyntheticImages.Rows(20);
            rows[7].Features[30] = float.NaN;
            var trainer = SyntheticImages.MapLabel(ml).Append(ml.MulticlassClassification.Trainers.ImageClassifier(Quick(ImageClassifierArchitecture.LeNet300100, 1)));
            var ex = Assert.ThrowsExactly<InvalidOperationException>(() => trainer.Fit(SyntheticImages.Load(ml, rows)));
            StringAssert.Contains(ex.Message, "Row 7 of the training data has a non-finite feature value (NaN)");
        }

        [TestMethod]
        public void InvalidOptionsNameTheOption()
        {
            var ml = new MLContext(seed: 1);
            var cases = new (Action<ImageClassifierTrainer.Options> Set, string Expected)[]
            {
                (o => o.Epochs = 0, "Options.Epochs must be at least 1; got 0."),
                (o => o.BatchSize = -4, "Options.BatchSize must be at least 1; got -4."),
                (o => o.LearningRate = double.NaN, "Options.LearningRate must be a positive number"),
                (o => o.Momentum = 1, "Options.Momentum must be in [0, 1)"),
                (o => o.WeightDecay = -1, "Options.WeightDecay must be zero or positive"),
                (o => o.StepFactor = 0, "Options.StepFactor must be in (0, 1]"),
                (o => o.RandomCropPadding = -1, "Options.RandomCropPadding must be zero or positive"),
                (o => o.NumberOfThreads = 0, "Options.NumberOfThreads must be at least 1"),
                (o => o.Architecture = (ImageClassifierArchitecture)42, "Unknown architecture."),
            };
            foreach (var (set, expected) in cases)
            {
                var options = new ImageClassifierTrainer.Options();
                set(options);
                var ex = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.MulticlassClassification.Trainers.ImageClassifier(options));
                StringAssert.Contains(ex.Message, expected);
            }
            var blank = new ImageClassifierTrainer.Options { LabelColumnName = " " };
            StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => ml.MulticlassClassification.Trainers.ImageClassifier(blank)).Message,
                "Options.LabelColumnName must name a column.");
        }

        [TestMethod]
        public void AnImageTooSmallForTheArchitectureIsRejected()
        {
            var ml = new MLContext(seed: 1);
            var ex = Assert.ThrowsExactly<ArgumentException>(() => Fit(ml, Quick(ImageClassifierArchitecture.LeNet5, 1), rows: 16, size: 8));
            StringAssert.Contains(ex.Message, "LeNet5 needs images of at least 12x12; got 1x8x8");
        }

        [TestMethod]
        public void ScoringDataWithAnotherImageSizeIsRejected()
        {
            var ml = new MLContext(seed: 1);
            var (model, _) = Fit(ml, Quick(ImageClassifierArchitecture.LeNet300100, 1), rows: 32);
            var ex = Assert.ThrowsExactly<ArgumentException>(() => model.Transform(SyntheticImages.Load(ml, 4, height: 10, width: 10)));
            StringAssert.Contains(ex.Message, "Feature column 'Features' must be a vector of 144 Single values (1x12x12 images)");
            DisposeAll(model);
        }

        [TestMethod]
        public void ADamagedModelFileFailsToLoadWithAClearMessage()
        {
            var ml = new MLContext(seed: 1);
            var (model, train) = Fit(ml, Quick(ImageClassifierArchitecture.LeNet300100, 1), rows: 32);
            string path = TempZip();
            try
            {
                ml.Model.Save(model, train.Schema, path);
                using (ZipArchive zip = ZipFile.Open(path, ZipArchiveMode.Update))
                {
                    ZipArchiveEntry weights = zip.Entries.Single(e => e.FullName.EndsWith("Weights.bin", StringComparison.Ordinal));
                    string name = weights.FullName;
                    weights.Delete();
                    using var stream = zip.CreateEntry(name).Open();
                    stream.Write(new byte[] { 1, 2, 3, 4, 5, 6, 7, 8 });
                }
                Exception ex = Assert.Throws<Exception>(() => new MLContext().Model.Load(path, out _));
                StringAssert.Contains(Describe(ex), "Weights.bin: it holds 8 bytes, but Model.key records ");
            }
            finally
            {
                File.Delete(path);
                DisposeAll(model);
            }
        }

        private static string Describe(Exception ex)
        {
            var text = new System.Text.StringBuilder();
            for (Exception? e = ex; e is not null; e = e.InnerException)
                text.AppendLine(e.Message);
            return text.ToString();
        }

        private static string TempZip() => Path.Combine(Path.GetTempPath(), "pruning-" + Guid.NewGuid().ToString("N") + ".zip");

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
