// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Training;
using Microsoft.VisualStudio.TestTools.UnitTesting;

namespace Microsoft.ML.Pruning.Tests.Training
{
    /// <summary><c>Transform</c> scores in blocks of rows; these check that it computes what row-by-row scoring does.</summary>
    [TestClass]
    public sealed class BlockScoringTests
    {
        private sealed class Scored
        {
            public uint PredictedLabel { get; set; }

            public float[] Score { get; set; } = Array.Empty<float>();
        }

        private static ITransformer s_model = null!;
        private static MLContext s_ml = null!;

        [ClassInitialize]
        public static void TrainOnce(TestContext _)
        {
            s_ml = new MLContext(seed: 4);
            IDataView train = SyntheticImages.Load(s_ml, 128);
            s_model = SyntheticImages.MapLabel(s_ml)
                .Append(s_ml.MulticlassClassification.Trainers.ImageClassifier(new ImageClassifierTrainer.Options
                {
                    Architecture = ImageClassifierArchitecture.LeNet5,
                    Epochs = 1,
                    BatchSize = 32,
                }))
                .Fit(train);
        }

        [ClassCleanup]
        public static void DisposeModel() => (((IEnumerable<ITransformer>)s_model).Last() as IDisposable)?.Dispose();

        [TestMethod]
        [DataRow(1)]
        [DataRow(255)]
        [DataRow(256)]
        [DataRow(600)]
        public void BlocksGiveTheScoresOfOneRowAtATimeAndPassTheOtherColumnsThrough(int rows)
        {
            List<ImageRow> images = SyntheticImages.Rows(rows, seed: 7);
            IDataView scored = s_model.Transform(SyntheticImages.Load(s_ml, images));

            var engine = s_ml.Model.CreatePredictionEngine<ImageRow, Scored>(s_model);
            Scored[] blockwise = s_ml.Data.CreateEnumerable<Scored>(scored, reuseRowObject: false).ToArray();
            string[] labels = scored.GetColumn<uint>("Label").Select(key => SyntheticImages.ClassNames[key - 1]).ToArray();
            Assert.AreEqual(rows, blockwise.Length);
            for (int i = 0; i < rows; i++)
            {
                Scored single = engine.Predict(images[i]);
                Assert.AreEqual(4, blockwise[i].Score.Length);
                for (int c = 0; c < 4; c++)
                    Assert.AreEqual(single.Score[c], blockwise[i].Score[c], 1e-5, $"row {i}, class {c}");
                Assert.AreEqual((uint)Array.IndexOf(blockwise[i].Score, blockwise[i].Score.Max()) + 1, blockwise[i].PredictedLabel, $"row {i}");
                Assert.AreEqual(images[i].Label, labels[i], $"row {i}");
            }
        }

        [TestMethod]
        public void TheSameDataScoresTheSameEveryTime()
        {
            IDataView scored = s_model.Transform(SyntheticImages.Load(s_ml, 300, seed: 8));
            float[][] first = scored.GetColumn<float[]>("Score").ToArray();
            float[][] second = scored.GetColumn<float[]>("Score").ToArray();
            for (int i = 0; i < first.Length; i++)
                CollectionAssert.AreEqual(first[i], second[i], $"row {i}");
        }

        [TestMethod]
        public void AShuffledCursorScoresEachRowLikeTheOrderedOne()
        {
            IDataView scored = s_model.Transform(SyntheticImages.Load(s_ml, 300, seed: 9));
            var ordered = new List<(float Pixel, float Score)>();
            var shuffled = new List<(float Pixel, float Score)>();
            foreach (var (target, random) in new[] { (ordered, (Random?)null), (shuffled, new Random(1)) })
            {
                using DataViewRowCursor cursor = scored.GetRowCursor(scored.Schema, random);
                var features = cursor.GetGetter<VBuffer<float>>(scored.Schema["Features"]);
                var score = cursor.GetGetter<VBuffer<float>>(scored.Schema["Score"]);
                VBuffer<float> pixels = default, scores = default;
                while (cursor.MoveNext())
                {
                    features(ref pixels);
                    score(ref scores);
                    target.Add((pixels.GetItemOrDefault(0), scores.GetItemOrDefault(0)));
                }
            }
            Assert.AreEqual(300, shuffled.Count);
            var byPixel = ordered.ToDictionary(p => p.Pixel, p => p.Score);
            foreach (var (pixel, score) in shuffled)
                Assert.AreEqual(byPixel[pixel], score, 1e-5);
        }

        [TestMethod]
        public void ABadImageIsReportedWithItsRowAndOtherColumnsStillRead()
        {
            List<ImageRow> images = SyntheticImages.Rows(400, seed: 10);
            images[300].Features[17] = float.NaN;
            IDataView scored = s_model.Transform(SyntheticImages.Load(s_ml, images));

            var error = Assert.ThrowsExactly<InvalidOperationException>(() => scored.GetColumn<float[]>("Score").ToArray());
            StringAssert.Contains(error.Message, "Row 300");
            StringAssert.Contains(error.Message, "non-finite");
            // A cursor that does not read the scores does not score.
            Assert.AreEqual(400, scored.GetColumn<uint>("Label").Count());
        }

        [TestMethod]
        public void EmptyDataGivesNoRows()
        {
            IDataView scored = s_model.Transform(SyntheticImages.Load(s_ml, Array.Empty<ImageRow>()));
            Assert.AreEqual(0, scored.GetColumn<float[]>("Score").Count());
        }

        [TestMethod]
        public void TransformReturnsTheBlockScoringViewThroughTheChainAndTheTransformer()
        {
            IDataView input = SyntheticImages.Load(s_ml, 3);
            var classifier = ((IEnumerable<ITransformer>)s_model).OfType<ImageClassificationTransformer>().Single();
            IDataView withKeys = SyntheticImages.MapLabel(s_ml).Fit(input).Transform(input);
            Assert.IsInstanceOfType<BlockScoringDataView>(classifier.Transform(withKeys));
            Assert.IsInstanceOfType<BlockScoringDataView>(((ITransformer)classifier).Transform(withKeys));
            Assert.IsInstanceOfType<BlockScoringDataView>(s_model.Transform(input));
        }
    }
}
