// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using Microsoft.ML;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Pruners;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using static Microsoft.ML.Pruning.Tests.Pruners.PrunerTestModels;

namespace Microsoft.ML.Pruning.Tests.Pruners
{
    [TestClass]
    public sealed class PrunerValidationTests
    {
        private static MLContext s_ml = null!;
        private static IDataView s_train = null!;
        private static ITransformer s_model = null!;

        [ClassInitialize]
        public static void TrainOnce(TestContext context)
        {
            s_ml = new MLContext(seed: 1);
            s_train = SyntheticImages.Load(s_ml, 64);
            s_model = Train(s_ml, s_train, ImageClassifierArchitecture.LeNet300100, epochs: 1);
        }

        [ClassCleanup]
        public static void Cleanup() => DisposeAll(s_model);

        [TestMethod]
        public void KeptFractionsOutsideZeroToOneAreRejected()
        {
            foreach (double fraction in new[] { 0, -0.1, 1.5, double.NaN })
            {
                var ex = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => s_ml.Transforms.PruneLayerwiseObs(s_model, fraction));
                StringAssert.Contains(ex.Message, "Options.KeptFraction must be in (0, 1]");
                Assert.AreEqual("KeptFraction", ex.ParamName);
                ex = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => s_ml.Transforms.PruneMagnitude(s_model, fraction));
                StringAssert.Contains(ex.Message, "Options.KeptFraction must be in (0, 1]");
            }
            var layer = new LayerwiseObsPruner.Options { LayerKeptFractions = new Dictionary<string, double> { ["fc2"] = 0 } };
            StringAssert.Contains(Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => s_ml.Transforms.PruneLayerwiseObs(s_model, layer)).Message,
                "Options.LayerKeptFractions['fc2'] must be in (0, 1]; got 0.");
        }

        [TestMethod]
        public void OtherBadOptionsNameTheOption()
        {
            var cases = new (Func<PruningOptions> Make, Type Exception, string Expected)[]
            {
                (() => new LayerwiseObsPruner.Options { Damping = 0 }, typeof(ArgumentOutOfRangeException), "Options.Damping must be a positive number"),
                (() => new LayerwiseObsPruner.Options { CalibrationImages = 0 }, typeof(ArgumentOutOfRangeException), "Options.CalibrationImages must be at least 1"),
                (() => new LayerwiseObsPruner.Options { BlockSize = 0 }, typeof(ArgumentOutOfRangeException), "Options.BlockSize must be at least 1"),
                (() => new LayerwiseObsPruner.Options { ReconstructionTolerance = -1 }, typeof(ArgumentOutOfRangeException), "Options.ReconstructionTolerance must be zero or positive"),
                (() => new LayerwiseObsPruner.Options { RetrainIterations = -1 }, typeof(ArgumentOutOfRangeException), "Options.RetrainIterations must be zero or positive"),
                (() => new LayerwiseObsPruner.Options { RetrainIterations = 10, RetrainEpochs = 1 }, typeof(ArgumentException), "are exclusive; set one of them"),
                (() => new LayerwiseObsPruner.Options { LearningRate = 0 }, typeof(ArgumentOutOfRangeException), "Options.LearningRate must be a positive number"),
                (() => new LayerwiseObsPruner.Options { Momentum = 1 }, typeof(ArgumentOutOfRangeException), "Options.Momentum must be in [0, 1)"),
                (() => new LayerwiseObsPruner.Options { LayerKeptFractions = new Dictionary<string, double> { ["conv9"] = 0.5 } }, typeof(ArgumentException),
                    "Options.LayerKeptFractions names 'conv9', which is not a prunable layer of this lenet300 model (fc1, fc2, fc3)."),
                (() => new MagnitudePruner.Options { PruningRounds = 0 }, typeof(ArgumentOutOfRangeException), "Options.PruningRounds must be at least 1"),
                (() => new MagnitudePruner.Options { PruningRounds = 3 }, typeof(ArgumentException), "rounds of pruning need retraining in between"),
            };
            foreach (var (make, exception, expected) in cases)
            {
                PruningOptions options = make();
                Action create = options switch
                {
                    LayerwiseObsPruner.Options lobs => () => s_ml.Transforms.PruneLayerwiseObs(s_model, lobs),
                    MagnitudePruner.Options magnitude => () => s_ml.Transforms.PruneMagnitude(s_model, magnitude),
                    _ => throw new InvalidOperationException(),
                };
                Exception ex = Assert.Throws<Exception>(create);
                Assert.AreEqual(exception, ex.GetType(), ex.Message);
                StringAssert.Contains(ex.Message, expected);
            }
        }

        [TestMethod]
        public void AModelWithoutOurClassifierIsRejected()
        {
            ITransformer notOurs = s_ml.Transforms.Conversion.MapValueToKey("Label").Fit(s_train);
            var ex = Assert.ThrowsExactly<ArgumentException>(() => s_ml.Transforms.PruneLayerwiseObs(notOurs, 0.5));
            StringAssert.Contains(ex.Message, "The model is not a model trained by Microsoft.ML.Pruning");
            Assert.AreEqual("trainedModel", ex.ParamName);
            ex = Assert.ThrowsExactly<ArgumentException>(() => s_ml.Transforms.PruneMagnitude(notOurs, 0.5));
            StringAssert.Contains(ex.Message, "The model is not a model trained by Microsoft.ML.Pruning");
            Assert.ThrowsExactly<ArgumentNullException>(() => s_ml.Transforms.PruneMagnitude(null!, 0.5));
        }

        [TestMethod]
        public void CalibrationDataWithoutRowsOrColumnsIsRejected()
        {
            IDataView empty = s_ml.Data.SkipRows(s_train, 64);
            var ex = Assert.ThrowsExactly<InvalidOperationException>(() => s_ml.Transforms.PruneLayerwiseObs(s_model, 0.5).Fit(empty));
            StringAssert.Contains(ex.Message, "The calibration data has no rows.");
            ex = Assert.ThrowsExactly<InvalidOperationException>(() => s_ml.Transforms.PruneMagnitude(s_model, 0.5).Fit(empty));
            StringAssert.Contains(ex.Message, "The calibration data has no rows.");

            IDataView noFeatures = s_ml.Transforms.DropColumns("Features").Fit(s_train).Transform(s_train);
            var missing = Assert.ThrowsExactly<ArgumentException>(() => s_ml.Transforms.PruneLayerwiseObs(s_model, 0.5).Fit(noFeatures));
            StringAssert.Contains(missing.Message, "The calibration data has no feature column 'Features'");

            var retrain = new LayerwiseObsPruner.Options { RetrainIterations = 5, LabelColumnName = "Class" };
            missing = Assert.ThrowsExactly<ArgumentException>(() => s_ml.Transforms.PruneLayerwiseObs(s_model, retrain).Fit(s_train));
            StringAssert.Contains(missing.Message, "Retraining needs labels, but the calibration data has no label column 'Class'");
        }
    }
}
