// Licensed under the MIT license.

using System;
using System.Linq;
using Microsoft.ML.Data;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Pruners;
using Microsoft.ML.Pruning.Tests.Pruners;
using Microsoft.ML.Pruning.Training;
using Microsoft.VisualStudio.TestTools.UnitTesting;

namespace Microsoft.ML.Pruning.Tests.MLNet
{
    /// <summary><c>model.GetSummary()</c> and <c>model.GetImageClassifier()</c> on every shape of model the library returns.</summary>
    [TestClass]
    public sealed class TrainedModelExtensionsTests
    {
        [TestMethod]
        public void SummaryComesFromAnyChainTheLibraryReturns()
        {
            var ml = new MLContext(seed: 1);
            IDataView train = SyntheticImages.Load(ml, 64);
            ITransformer model = PrunerTestModels.Train(ml, train, ImageClassifierArchitecture.LeNet300100, epochs: 1);
            ImageClassificationTransformer classifier = PrunerTestModels.Classifier(model);
            // A chain inside a chain, as appending a fitted model to further steps gives.
            ITransformer nested = new TransformerChain<ITransformer>(model, ml.Transforms.CopyColumns("Copy", "Score").Fit(model.Transform(train)));
            ITransformer pruned = ml.Transforms.PruneMagnitude(model, new MagnitudePruner.Options { KeptFraction = 0.25 }).Fit(train);
            string zip = PrunerTestModels.TempZip();
            try
            {
                ml.Model.Save(pruned, train.Schema, zip);
                ITransformer loaded = ml.Model.Load(zip, out _);

                long parameters = classifier.GetSummary().Parameters;
                Assert.AreEqual(parameters, model.GetSummary().Parameters);
                Assert.AreEqual(parameters, ((ITransformer)classifier).GetSummary().Parameters);
                Assert.AreSame(classifier, nested.GetImageClassifier());
                Assert.AreEqual(classifier.GetSummary().NonZeroParameters, nested.GetSummary().NonZeroParameters);

                long kept = pruned.GetSummary().NonZeroParameters;
                Assert.IsTrue(kept < parameters / 2, $"{kept} of {parameters} non-zero after keeping 25% of the weights");
                Assert.AreEqual(kept, loaded.GetSummary().NonZeroParameters);
                Assert.AreEqual(pruned.GetSummary().SerializedBytes, loaded.GetSummary().SerializedBytes);
                Assert.AreNotSame(classifier, pruned.GetImageClassifier());
                PrunerTestModels.DisposeAll(loaded);
            }
            finally
            {
                System.IO.File.Delete(zip);
                PrunerTestModels.DisposeAll(pruned);
                PrunerTestModels.DisposeAll(model);
            }
        }

        [TestMethod]
        public void AModelWithoutAClassifierSaysWhatItHas()
        {
            var ml = new MLContext(seed: 1);
            IDataView data = SyntheticImages.Load(ml, 8);
            ITransformer other = ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.Transforms.CopyColumns("Copy", "Features")).Fit(data);

            var ex = Assert.ThrowsExactly<ArgumentException>(() => other.GetSummary());
            StringAssert.Contains(ex.Message, "contains no ImageClassificationTransformer");
            StringAssert.Contains(ex.Message, "ValueToKeyMappingTransformer");
            StringAssert.Contains(ex.Message, "ColumnCopyingTransformer");
            Assert.AreEqual("model", ex.ParamName);
            Assert.ThrowsExactly<ArgumentNullException>(() => ((ITransformer)null!).GetSummary());
        }
    }
}
