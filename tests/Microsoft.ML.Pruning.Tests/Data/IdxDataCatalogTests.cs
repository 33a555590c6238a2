// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.ML.Data;
using Microsoft.ML.Pruning.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;

namespace Microsoft.ML.Pruning.Tests.Data
{
    [TestClass]
    public sealed class IdxDataCatalogTests
    {
        private const int Count = 6;
        private const int Height = 3;
        private const int Width = 4;
        private static readonly byte[] _labels = { 2, 0, 1, 2, 1, 0 };
        private static readonly string[] _names = { "zero", "one", "two" };

        private readonly MLContext _mlContext = new(seed: 1);
        private string _directory = null!;
        private byte[] _pixels = null!;
        private string _imagesPath = null!;
        private string _labelsPath = null!;

        [TestInitialize]
        public void WriteFiles()
        {
            _directory = DataTestFiles.CreateTempDirectory();
            _pixels = DataTestFiles.Pattern(Count * Height * Width);
            _imagesPath = DataTestFiles.WriteImages(Path.Combine(_directory, "images.gz"), Count, Height, Width, _pixels, gzip: true);
            _labelsPath = DataTestFiles.WriteLabels(Path.Combine(_directory, "labels"), _labels);
        }

        [TestCleanup]
        public void DeleteDirectory() => DataTestFiles.DeleteDirectory(_directory);

        [TestMethod]
        public void SchemaHasTextLabelAndChannelsFirstFeatures()
        {
            IDataView data = _mlContext.Data.LoadFromIdx(_imagesPath, _labelsPath);

            Assert.AreEqual(2, data.Schema.Count);
            Assert.AreEqual(TextDataViewType.Instance, data.Schema["Label"].Type);
            var features = (VectorDataViewType)data.Schema["Features"].Type;
            Assert.AreEqual(NumberDataViewType.Single, features.ItemType);
            CollectionAssert.AreEqual(new[] { 1, Height, Width }, features.Dimensions.ToArray());
            Assert.AreEqual(Height * Width, features.Size);
            Assert.AreEqual((long)Count, data.GetRowCount());
            Assert.IsTrue(data.CanShuffle);
        }

        [TestMethod]
        public void FeaturesArePixelsTimesScale()
        {
            float[][] defaultScale = _mlContext.Data.LoadFromIdx(_imagesPath, _labelsPath).GetColumn<float[]>("Features").ToArray();
            float[][] halves = _mlContext.Data.LoadFromIdx(_imagesPath, _labelsPath, scale: 0.5f).GetColumn<float[]>("Features").ToArray();

            Assert.HasCount(Count, defaultScale);
            for (int row = 0; row < Count; row++)
            {
                for (int i = 0; i < Height * Width; i++)
                {
                    byte pixel = _pixels[row * Height * Width + i];
                    Assert.AreEqual(pixel * (1f / 255), defaultScale[row][i]);
                    Assert.AreEqual(pixel * 0.5f, halves[row][i]);
                }
            }
            Assert.AreEqual(11 / 255f, defaultScale[0][0], 1e-7f);
        }

        [TestMethod]
        public void LabelsAreNamesOrDigits()
        {
            string[] named = _mlContext.Data.LoadFromIdx(_imagesPath, _labelsPath, _names).GetColumn<string>("Label").ToArray();
            string[] digits = _mlContext.Data.LoadFromIdx(_imagesPath, _labelsPath).GetColumn<string>("Label").ToArray();

            CollectionAssert.AreEqual(new[] { "two", "zero", "one", "two", "one", "zero" }, named);
            CollectionAssert.AreEqual(new[] { "2", "0", "1", "2", "1", "0" }, digits);
        }

        [TestMethod]
        public void MaxRowsLoadsTheFirstRows()
        {
            IDataView data = _mlContext.Data.LoadFromIdx(_imagesPath, _labelsPath, _names, maxRows: 2);

            Assert.AreEqual(2L, data.GetRowCount());
            CollectionAssert.AreEqual(new[] { "two", "zero" }, data.GetColumn<string>("Label").ToArray());
            CollectionAssert.AreEqual(_pixels[12..24].Select(p => p * (1f / 255)).ToArray(), data.GetColumn<float[]>("Features").ElementAt(1));
        }

        [TestMethod]
        public void MismatchedCountsNameBothFiles()
        {
            string shortLabels = DataTestFiles.WriteLabels(Path.Combine(_directory, "five-labels"), _labels[..5]);

            var ex = Assert.ThrowsExactly<InvalidDataException>(() => _mlContext.Data.LoadFromIdx(_imagesPath, shortLabels));
            // maxRows must not hide a mismatched pair.
            var limited = Assert.ThrowsExactly<InvalidDataException>(() => _mlContext.Data.LoadFromIdx(_imagesPath, shortLabels, maxRows: 2));

            StringAssert.Contains(ex.Message, $"Image file '{_imagesPath}' holds 6 images but label file '{shortLabels}' holds 5 labels");
            Assert.AreEqual(ex.Message, limited.Message);
        }

        [TestMethod]
        public void LabelWithoutNameIsRejected()
        {
            var ex = Assert.ThrowsExactly<InvalidDataException>(() => _mlContext.Data.LoadFromIdx(_imagesPath, _labelsPath, new[] { "zero", "one" }));

            StringAssert.Contains(ex.Message, _labelsPath + ": label 2 at index 0 has no name; 2 label names were given");
        }

        [TestMethod]
        public void InvalidArgumentsAreRejected()
        {
            Assert.ThrowsExactly<ArgumentException>(() => _mlContext.Data.LoadFromIdx(_imagesPath, _labelsPath, new[] { "a", "b", "a" }));
            Assert.ThrowsExactly<ArgumentException>(() => _mlContext.Data.LoadFromIdx(_imagesPath, _labelsPath, new[] { "a", "", "c" }));
            Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _mlContext.Data.LoadFromIdx(_imagesPath, _labelsPath, scale: float.NaN));
            Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _mlContext.Data.LoadFromIdx(_imagesPath, _labelsPath, maxRows: -1));
            Assert.ThrowsExactly<FileNotFoundException>(() => _mlContext.Data.LoadFromIdx(Path.Combine(_directory, "none"), _labelsPath));
        }

        [TestMethod]
        public void ShuffledCursorVisitsEveryRowOnceUnderItsId()
        {
            IDataView data = _mlContext.Data.LoadFromIdx(_imagesPath, _labelsPath, _names);
            var seen = new List<(ulong Id, string Label)>();
            using (DataViewRowCursor cursor = data.GetRowCursor(data.Schema, new Random(3)))
            {
                ValueGetter<DataViewRowId> id = cursor.GetIdGetter();
                ValueGetter<ReadOnlyMemory<char>> label = cursor.GetGetter<ReadOnlyMemory<char>>(data.Schema["Label"]);
                DataViewRowId rowId = default;
                ReadOnlyMemory<char> text = default;
                while (cursor.MoveNext())
                {
                    id(ref rowId);
                    label(ref text);
                    seen.Add((rowId.Low, text.ToString()));
                }
                Assert.AreEqual(-1L, cursor.Position);
            }

            CollectionAssert.AreEquivalent(Enumerable.Range(0, Count).Select(i => (ulong)i).ToArray(), seen.Select(s => s.Id).ToArray());
            CollectionAssert.AreNotEqual(Enumerable.Range(0, Count).Select(i => (ulong)i).ToArray(), seen.Select(s => s.Id).ToArray());
            foreach ((ulong rowId, string text) in seen)
                Assert.AreEqual(_names[_labels[rowId]], text);
        }

        [TestMethod]
        public void WorksWithDataOperations()
        {
            IDataView data = _mlContext.Data.LoadFromIdx(_imagesPath, _labelsPath, _names);

            IDataView shuffled = _mlContext.Data.ShuffleRows(data, seed: 5);
            CollectionAssert.AreEquivalent(data.GetColumn<string>("Label").ToArray(), shuffled.GetColumn<string>("Label").ToArray());
            DataOperationsCatalog.TrainTestData split = _mlContext.Data.TrainTestSplit(data, testFraction: 0.5, seed: 2);
            Assert.AreEqual(Count, split.TrainSet.GetColumn<string>("Label").Count() + split.TestSet.GetColumn<string>("Label").Count());
            IDataView keyed = _mlContext.Transforms.Conversion.MapValueToKey("Label").Fit(data).Transform(data);
            Assert.AreEqual(3UL, ((KeyDataViewType)keyed.Schema["Label"].Type).Count);
            Row[] rows = _mlContext.Data.CreateEnumerable<Row>(_mlContext.Data.Cache(data), reuseRowObject: false).ToArray();
            Assert.AreEqual("two", rows[3].Label);
            Assert.AreEqual(_pixels[3 * 12 + 5] * (1f / 255), rows[3].Features[5]);
        }

        [TestMethod]
        public void CursorRejectsMisuse()
        {
            IDataView data = _mlContext.Data.LoadFromIdx(_imagesPath, _labelsPath);
            using DataViewRowCursor cursor = data.GetRowCursor(new[] { data.Schema["Label"] });

            Assert.IsTrue(cursor.IsColumnActive(data.Schema["Label"]));
            Assert.IsFalse(cursor.IsColumnActive(data.Schema["Features"]));
            Assert.ThrowsExactly<InvalidOperationException>(() => cursor.GetGetter<VBuffer<float>>(data.Schema["Features"]));
            Assert.ThrowsExactly<InvalidOperationException>(() => cursor.GetGetter<string>(data.Schema["Label"]));
            ValueGetter<ReadOnlyMemory<char>> label = cursor.GetGetter<ReadOnlyMemory<char>>(data.Schema["Label"]);
            ReadOnlyMemory<char> text = default;
            Assert.ThrowsExactly<InvalidOperationException>(() => label(ref text));
            Assert.IsTrue(cursor.MoveNext());
            label(ref text);
            Assert.AreEqual("2", text.ToString());
        }

        /// <summary>A row as an application would declare it.</summary>
        public sealed class Row
        {
            public string Label { get; set; } = "";

            [VectorType(1, Height, Width)]
            public float[] Features { get; set; } = Array.Empty<float>();
        }
    }
}
