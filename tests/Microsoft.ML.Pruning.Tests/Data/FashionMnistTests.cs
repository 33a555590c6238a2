// Licensed under the MIT license.

using System;
using System.IO;
using System.Linq;
using Microsoft.ML.Data;
using Microsoft.ML.Pruning.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;

namespace Microsoft.ML.Pruning.Tests.Data
{
    [TestClass]
    public sealed class FashionMnistTests
    {
        private readonly MLContext _mlContext = new(seed: 1);
        private string? _savedVariable;
        private string _directory = null!;

        [TestInitialize]
        public void SaveEnvironment()
        {
            _savedVariable = Environment.GetEnvironmentVariable(FashionMnist.DirectoryVariable);
            _directory = DataTestFiles.CreateTempDirectory();
        }

        [TestCleanup]
        public void RestoreEnvironment()
        {
            Environment.SetEnvironmentVariable(FashionMnist.DirectoryVariable, _savedVariable);
            DataTestFiles.DeleteDirectory(_directory);
        }

        [TestMethod]
        public void ClassNamesAreTheOfficialTen()
        {
            CollectionAssert.AreEqual(
                new[] { "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot" },
                FashionMnist.ClassNames.ToArray());
        }

        [TestMethod]
        public void EnvironmentVariableOverridesTheDefaultDirectory()
        {
            Environment.SetEnvironmentVariable(FashionMnist.DirectoryVariable, null);
            Assert.AreEqual("/usr/share/datasets/fashion-mnist", FashionMnist.DataDirectory);
            Environment.SetEnvironmentVariable(FashionMnist.DirectoryVariable, _directory);
            Assert.AreEqual(_directory, FashionMnist.DataDirectory);
        }

        [TestMethod]
        public void MissingFilesExplainHowToGetThem()
        {
            Environment.SetEnvironmentVariable(FashionMnist.DirectoryVariable, _directory);

            Assert.IsFalse(FashionMnist.TryFindDirectory(out string? found));
            Assert.IsNull(found);
            var ex = Assert.ThrowsExactly<FileNotFoundException>(() => FashionMnist.LoadTrain(_mlContext));

            Assert.AreEqual(Path.Combine(_directory, "train-images-idx3-ubyte.gz"), ex.FileName);
            StringAssert.Contains(ex.Message, $"'train-images-idx3-ubyte.gz' was not found in '{_directory}' (set by FASHION_MNIST_DIR)");
            StringAssert.Contains(ex.Message, "apt-get install dataset-fashion-mnist");
            StringAssert.Contains(ex.Message, "set FASHION_MNIST_DIR to a directory holding");
        }

        [TestMethod]
        public void LoadsHandMadeFilesWithClassNames()
        {
            // Test files gzip-compressed, training files unpacked (no .gz): both are found.
            byte[] pixels = DataTestFiles.Pattern(4 * 28 * 28);
            DataTestFiles.WriteImages(Path.Combine(_directory, "t10k-images-idx3-ubyte.gz"), 4, 28, 28, pixels, gzip: true);
            DataTestFiles.WriteLabels(Path.Combine(_directory, "t10k-labels-idx1-ubyte.gz"), new byte[] { 9, 0, 5, 8 }, gzip: true);
            DataTestFiles.WriteImages(Path.Combine(_directory, "train-images-idx3-ubyte"), 4, 28, 28, pixels);
            DataTestFiles.WriteLabels(Path.Combine(_directory, "train-labels-idx1-ubyte"), new byte[] { 1, 2, 3, 4 });
            Environment.SetEnvironmentVariable(FashionMnist.DirectoryVariable, _directory);

            Assert.IsTrue(FashionMnist.TryFindDirectory(out string? found));
            Assert.AreEqual(_directory, found);
            CollectionAssert.AreEqual(new[] { "Ankle boot", "T-shirt/top", "Sandal" }, FashionMnist.LoadTest(_mlContext, maxRows: 3).GetColumn<string>("Label").ToArray());
            CollectionAssert.AreEqual(new[] { "Trouser", "Pullover", "Dress", "Coat" }, FashionMnist.LoadTrain(_mlContext).GetColumn<string>("Label").ToArray());
        }

        [TestMethod]
        public void LoadsTheInstalledTestSet()
        {
            // Only where the dataset-fashion-mnist package is installed; unit tests must not need it.
            if (!File.Exists(Path.Combine(FashionMnist.DefaultDirectory, FashionMnist.TestImagesFileName)))
                return;

            IDataView data = FashionMnist.LoadTest(_mlContext, maxRows: 100, directory: FashionMnist.DefaultDirectory);

            CollectionAssert.AreEqual(new[] { 1, 28, 28 }, ((VectorDataViewType)data.Schema["Features"].Type).Dimensions.ToArray());
            string[] labels = data.GetColumn<string>("Label").ToArray();
            Assert.HasCount(100, labels);
            CollectionAssert.IsSubsetOf(labels.Distinct().ToArray(), FashionMnist.ClassNames.ToArray());
            // The first test image is an ankle boot.
            Assert.AreEqual("Ankle boot", labels[0]);
            float[][] features = data.GetColumn<float[]>("Features").ToArray();
            Assert.IsTrue(features.All(f => f.Length == 784 && f.All(v => v >= 0 && v <= 1)));
            Assert.IsGreaterThan(0f, features[0].Max());
        }
    }
}
