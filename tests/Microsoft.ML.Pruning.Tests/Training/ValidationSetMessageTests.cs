// Licensed under the MIT license.

using System;
using Microsoft.ML.Pruning.Training;
using Microsoft.VisualStudio.TestTools.UnitTesting;

namespace Microsoft.ML.Pruning.Tests.Training
{
    /// <summary>A validation set that did not go through the steps before the trainer fails saying how to prepare it.</summary>
    [TestClass]
    public sealed class ValidationSetMessageTests
    {
        [TestMethod]
        public void ARawValidationSetFailsWithHowToTransformIt()
        {
            var ml = new MLContext(seed: 1);
            IDataView train = SyntheticImages.Load(ml, 32), validation = SyntheticImages.Load(ml, 16, seed: 2);
            var options = new ImageClassifierTrainer.Options { Epochs = 1, ValidationSet = validation };
            var pipeline = SyntheticImages.MapLabel(ml).Append(ml.MulticlassClassification.Trainers.ImageClassifier(options));

            var ex = Assert.ThrowsExactly<ArgumentException>(() => pipeline.Fit(train));

            StringAssert.Contains(ex.Message, "Label column 'Label' must be a key type");
            StringAssert.Contains(ex.Message, "Options.ValidationSet is read as it is, not through the pipeline");
            StringAssert.Contains(ex.Message, "options.ValidationSet = prepare.Transform(validation)");
        }

        [TestMethod]
        public void AValidationSetWithoutTheImageColumnFailsWithHowToTransformIt()
        {
            var ml = new MLContext(seed: 1);
            IDataView train = SyntheticImages.Load(ml, 32);
            IDataView validation = ml.Transforms.Conversion.MapValueToKey("Label").Fit(train).Transform(
                ml.Transforms.DropColumns("Features").Fit(train).Transform(train));
            var options = new ImageClassifierTrainer.Options { Epochs = 1, ValidationSet = validation };

            var ex = Assert.ThrowsExactly<ArgumentException>(() =>
                SyntheticImages.MapLabel(ml).Append(ml.MulticlassClassification.Trainers.ImageClassifier(options)).Fit(train));

            StringAssert.Contains(ex.Message, "The validation set has no feature column 'Features'.");
            StringAssert.Contains(ex.Message, "transform it with the same steps that come before the trainer");
        }

        [TestMethod]
        public void AValidationSetOfOtherImagesNamesBothShapes()
        {
            var ml = new MLContext(seed: 1);
            IDataView train = SyntheticImages.Load(ml, 32);
            IDataView validation = SyntheticImages.MapLabel(ml).Fit(train).Transform(SyntheticImages.Load(ml, 16, channels: 3));
            var options = new ImageClassifierTrainer.Options { Epochs = 1, ValidationSet = validation };

            var ex = Assert.ThrowsExactly<ArgumentException>(() =>
                SyntheticImages.MapLabel(ml).Append(ml.MulticlassClassification.Trainers.ImageClassifier(options)).Fit(train));

            StringAssert.Contains(ex.Message, "The validation set has 3x12x12 images and 4 classes; the training data has 1x12x12 and 4.");
        }
    }
}
