// Licensed under the MIT license.

using System;
using System.IO;
using System.Linq;
using Microsoft.ML.Pruning.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;

namespace Microsoft.ML.Pruning.Tests.Data
{
    [TestClass]
    public sealed class IdxReaderTests
    {
        private string _directory = null!;

        [TestInitialize]
        public void CreateDirectory() => _directory = DataTestFiles.CreateTempDirectory();

        [TestCleanup]
        public void DeleteDirectory() => DataTestFiles.DeleteDirectory(_directory);

        // The file names contradict the content on purpose: compression is detected from the bytes.
        [TestMethod]
        [DataRow(false, "images.idx3-ubyte.gz")]
        [DataRow(true, "images.idx3-ubyte")]
        public void ReadsImagesExactly(bool gzip, string fileName)
        {
            byte[] pixels = DataTestFiles.Pattern(3 * 2 * 4);
            string path = DataTestFiles.WriteImages(Path.Combine(_directory, fileName), 3, 2, 4, pixels, gzip);

            IdxImages images = IdxReader.ReadImages(path);

            Assert.AreEqual(3, images.Count);
            Assert.AreEqual(2, images.Height);
            Assert.AreEqual(4, images.Width);
            Assert.AreEqual(8, images.PixelsPerImage);
            CollectionAssert.AreEqual(pixels, images.Pixels);
            // Row-major: image 1, row 1, column 2.
            Assert.AreEqual(pixels[(1 * 2 + 1) * 4 + 2], images.Pixels[14]);
            CollectionAssert.AreEqual(pixels[8..16], images.GetImage(1).ToArray());
        }

        [TestMethod]
        [DataRow(false)]
        [DataRow(true)]
        public void ReadsLabelsExactly(bool gzip)
        {
            byte[] labels = { 9, 0, 0, 3, 255, 7 };
            string path = DataTestFiles.WriteLabels(Path.Combine(_directory, "labels"), labels, gzip);

            CollectionAssert.AreEqual(labels, IdxReader.ReadLabels(path));
        }

        [TestMethod]
        [DataRow(false)]
        [DataRow(true)]
        public void MaxCountReadsTheFirstItems(bool gzip)
        {
            byte[] pixels = DataTestFiles.Pattern(5 * 3 * 3);
            string images = DataTestFiles.WriteImages(Path.Combine(_directory, "images"), 5, 3, 3, pixels, gzip);
            string labels = DataTestFiles.WriteLabels(Path.Combine(_directory, "labels"), new byte[] { 1, 2, 3, 4, 5 }, gzip);

            IdxImages two = IdxReader.ReadImages(images, maxCount: 2);
            Assert.AreEqual(2, two.Count);
            CollectionAssert.AreEqual(pixels[..18], two.Pixels);
            Assert.AreEqual(5, IdxReader.ReadImages(images, maxCount: 100).Count);
            Assert.AreEqual(0, IdxReader.ReadImages(images, maxCount: 0).Pixels.Length);
            CollectionAssert.AreEqual(new byte[] { 1, 2, 3 }, IdxReader.ReadLabels(labels, maxCount: 3));
            Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => IdxReader.ReadLabels(labels, maxCount: -1));
        }

        [TestMethod]
        [DataRow(false)]
        [DataRow(true)]
        public void WrongMagicNamesFileAndBothMagics(bool gzip)
        {
            // A label file passed as images: the classic swapped-arguments mistake.
            string path = DataTestFiles.WriteLabels(Path.Combine(_directory, "swapped"), new byte[] { 1, 2 }, gzip);

            var ex = Assert.ThrowsExactly<InvalidDataException>(() => IdxReader.ReadImages(path));

            StringAssert.Contains(ex.Message, path + ": expected IDX magic 0x00000803 (unsigned byte, 3 dimensions), found 0x00000801 (unsigned byte, 1 dimension)");
        }

        [TestMethod]
        public void NonIdxContentIsRejected()
        {
            string path = Path.Combine(_directory, "page.gz");
            File.WriteAllText(path, "<html>Not Found</html>");

            var ex = Assert.ThrowsExactly<InvalidDataException>(() => IdxReader.ReadLabels(path));

            StringAssert.Contains(ex.Message, path + ": expected IDX magic 0x00000801 (unsigned byte, 1 dimension), found 0x3C68746D (not an IDX file)");
        }

        [TestMethod]
        [DataRow(false)]
        [DataRow(true)]
        public void TruncatedImagesReportHowManyArePresent(bool gzip)
        {
            // The header promises 5 images of 2x2; the body holds 2 and a half.
            string path = DataTestFiles.Write(Path.Combine(_directory, "short"), DataTestFiles.Idx(0x803, new[] { 5, 2, 2 }, new byte[10]), gzip);

            var ex = Assert.ThrowsExactly<InvalidDataException>(() => IdxReader.ReadImages(path));

            StringAssert.Contains(ex.Message, path + ": file ends after 2 of 5 images");
            // Reading only what is there succeeds.
            Assert.AreEqual(2, IdxReader.ReadImages(path, maxCount: 2).Count);
        }

        [TestMethod]
        public void TruncatedLabelsReportHowManyArePresent()
        {
            string path = DataTestFiles.Write(Path.Combine(_directory, "short"), DataTestFiles.Idx(0x801, new[] { 10 }, new byte[3]), gzip: false);

            var ex = Assert.ThrowsExactly<InvalidDataException>(() => IdxReader.ReadLabels(path));

            StringAssert.Contains(ex.Message, path + ": file ends after 3 of 10 labels");
        }

        [TestMethod]
        public void TruncatedHeaderIsReported()
        {
            byte[] full = DataTestFiles.Idx(0x803, new[] { 1, 1, 1 }, new byte[1]);
            string path = DataTestFiles.Write(Path.Combine(_directory, "header"), full[..10], gzip: false);

            var ex = Assert.ThrowsExactly<InvalidDataException>(() => IdxReader.ReadImages(path));

            StringAssert.Contains(ex.Message, path + ": file ends after 10 bytes, inside the 16-byte IDX header");
        }

        [TestMethod]
        public void EmptyFileIsReported()
        {
            string path = Path.Combine(_directory, "empty");
            File.WriteAllBytes(path, Array.Empty<byte>());

            var ex = Assert.ThrowsExactly<InvalidDataException>(() => IdxReader.ReadLabels(path));

            StringAssert.Contains(ex.Message, path + ": file ends after 0 bytes");
        }

        [TestMethod]
        public void CutGzipStreamIsReportedWithTheFileName()
        {
            byte[] compressed = DataTestFiles.Gzip(DataTestFiles.Idx(0x803, new[] { 50, 10, 10 }, DataTestFiles.Pattern(5000)));
            string path = Path.Combine(_directory, "cut.gz");
            File.WriteAllBytes(path, compressed[..(compressed.Length / 2)]);

            var ex = Assert.ThrowsExactly<InvalidDataException>(() => IdxReader.ReadImages(path));

            // GZipStream ends quietly at the cut, so this is reported like any other truncation.
            StringAssert.StartsWith(ex.Message, path + ": file ends after ");
            StringAssert.Contains(ex.Message, " of 50 images");
        }

        [TestMethod]
        public void CorruptGzipDataNamesTheFile()
        {
            byte[] compressed = DataTestFiles.Gzip(DataTestFiles.Idx(0x801, new[] { 100 }, new byte[100]));
            // The first deflate block header now declares the reserved block type 3.
            compressed[10] = 0xff;
            string path = Path.Combine(_directory, "corrupt.gz");
            File.WriteAllBytes(path, compressed);

            var ex = Assert.ThrowsExactly<InvalidDataException>(() => IdxReader.ReadLabels(path));

            StringAssert.StartsWith(ex.Message, path + ": corrupt gzip data: ");
            Assert.IsInstanceOfType<InvalidDataException>(ex.InnerException);
        }

        [TestMethod]
        public void CorruptCountsFailWithoutHugeAllocations()
        {
            // 2,000,000 images of 28x28 would be 1.5 GB; the reader must find the end of the data first.
            string images = DataTestFiles.Write(Path.Combine(_directory, "images"), DataTestFiles.Idx(0x803, new[] { 2_000_000, 28, 28 }, new byte[784 * 3]), gzip: true);
            string labels = DataTestFiles.Write(Path.Combine(_directory, "labels"), DataTestFiles.Idx(0x801, new[] { int.MaxValue }, new byte[5]), gzip: false);
            string huge = DataTestFiles.Write(Path.Combine(_directory, "huge"), DataTestFiles.Idx(0x803, new[] { 1 << 30, 1 << 10, 1 << 10 }, new byte[1]), gzip: false);
            string negative = DataTestFiles.Write(Path.Combine(_directory, "negative"), DataTestFiles.Idx(0x801, new[] { -2 }, new byte[1]), gzip: false);

            StringAssert.Contains(Assert.ThrowsExactly<InvalidDataException>(() => IdxReader.ReadImages(images)).Message, images + ": file ends after 3 of 2000000 images");
            StringAssert.Contains(Assert.ThrowsExactly<InvalidDataException>(() => IdxReader.ReadLabels(labels)).Message, labels + ": file ends after 5 of 2147483647 labels");
            StringAssert.Contains(Assert.ThrowsExactly<InvalidDataException>(() => IdxReader.ReadImages(huge)).Message, huge + ": 1073741824 images of 1024x1024 pixels do not fit in one array");
            StringAssert.Contains(Assert.ThrowsExactly<InvalidDataException>(() => IdxReader.ReadLabels(negative)).Message, negative + ": dimension 0 of the IDX header is 4294967294, which is too large");
        }

        [TestMethod]
        public void ZeroSizedImagesAreRejected()
        {
            string path = DataTestFiles.WriteImages(Path.Combine(_directory, "flat"), 2, 0, 5, Array.Empty<byte>());

            var ex = Assert.ThrowsExactly<InvalidDataException>(() => IdxReader.ReadImages(path));

            StringAssert.Contains(ex.Message, path + ": invalid image size 0x5");
        }

        [TestMethod]
        public void MissingFileNamesThePath()
        {
            string path = Path.Combine(_directory, "absent-idx3-ubyte.gz");

            var ex = Assert.ThrowsExactly<FileNotFoundException>(() => IdxReader.ReadImages(path));

            Assert.AreEqual(path, ex.FileName);
            StringAssert.Contains(ex.Message, path);
        }

        [TestMethod]
        public void IdxImagesChecksThePixelCount()
        {
            Assert.ThrowsExactly<ArgumentException>(() => new IdxImages(2, 3, 3, new byte[17]));
            var images = new IdxImages(2, 3, 3, Enumerable.Range(0, 18).Select(i => (byte)i).ToArray());
            Assert.AreEqual(9, images.GetImage(1)[0]);
            Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => images.GetImage(2).ToArray());
        }
    }
}
