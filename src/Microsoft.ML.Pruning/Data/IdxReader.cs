// Licensed under the MIT license.

using System;
using System.Buffers.Binary;
using System.IO;
using System.IO.Compression;

namespace Microsoft.ML.Pruning.Data
{
    /// <summary>
    /// Reads IDX files, the format of MNIST and Fashion-MNIST: a big-endian header (magic number, then one
    /// 32-bit size per dimension) followed by the values. Files may be gzip-compressed or raw; compression is
    /// detected from the content, so renamed or unpacked files read the same.
    /// </summary>
    public static class IdxReader
    {
        /// <summary>Magic number of an image file: unsigned bytes, 3 dimensions (count, rows, columns).</summary>
        public const int ImagesMagic = 0x00000803;

        /// <summary>Magic number of a label file: unsigned bytes, 1 dimension (count).</summary>
        public const int LabelsMagic = 0x00000801;

        private const byte UnsignedByteType = 0x08;

        // Enough for the 47 MB of MNIST's training images in one read.
        private const int InitialBodyBytes = 64 << 20;

        /// <summary>Reads an image file (magic <c>0x00000803</c>).</summary>
        /// <param name="path">The file, gzip-compressed or raw.</param>
        /// <param name="maxCount">Reads at most this many images (the first ones); null reads all.</param>
        /// <exception cref="FileNotFoundException">The file does not exist.</exception>
        /// <exception cref="InvalidDataException">The file is not an IDX image file, or is truncated or corrupt.</exception>
        public static IdxImages ReadImages(string path, int? maxCount = null) => ReadImages(path, maxCount, out _);

        /// <summary>Reads a label file (magic <c>0x00000801</c>): one byte per item.</summary>
        /// <param name="path">The file, gzip-compressed or raw.</param>
        /// <param name="maxCount">Reads at most this many labels (the first ones); null reads all.</param>
        /// <exception cref="FileNotFoundException">The file does not exist.</exception>
        /// <exception cref="InvalidDataException">The file is not an IDX label file, or is truncated or corrupt.</exception>
        public static byte[] ReadLabels(string path, int? maxCount = null) => ReadLabels(path, maxCount, out _);

        /// <summary>As <see cref="ReadImages(string, int?)"/>, also returning the count the header declares.</summary>
        internal static IdxImages ReadImages(string path, int? maxCount, out int declaredCount)
        {
            string fullPath = CheckArguments(path, maxCount);
            using Stream stream = Open(fullPath);
            int[] dimensions = ReadHeader(stream, fullPath, ImagesMagic);
            (declaredCount, int height, int width) = (dimensions[0], dimensions[1], dimensions[2]);
            if (height < 1 || width < 1)
                throw new InvalidDataException($"{fullPath}: invalid image size {height}x{width} in the IDX header.");

            int count = Math.Min(declaredCount, maxCount ?? int.MaxValue);
            long imageSize = (long)height * width;
            if (imageSize > Array.MaxLength || count * imageSize > Array.MaxLength)
                throw new InvalidDataException($"{fullPath}: {count} images of {height}x{width} pixels do not fit in one array; pass a smaller maxCount.");

            byte[] pixels = ReadBody(stream, (int)(count * imageSize), fullPath, out int read);
            if (read < pixels.Length)
                throw new InvalidDataException($"{fullPath}: file ends after {read / imageSize} of {declaredCount} images.");
            return new IdxImages(count, height, width, pixels);
        }

        /// <summary>As <see cref="ReadLabels(string, int?)"/>, also returning the count the header declares.</summary>
        internal static byte[] ReadLabels(string path, int? maxCount, out int declaredCount)
        {
            string fullPath = CheckArguments(path, maxCount);
            using Stream stream = Open(fullPath);
            declaredCount = ReadHeader(stream, fullPath, LabelsMagic)[0];

            byte[] labels = ReadBody(stream, Math.Min(declaredCount, maxCount ?? int.MaxValue), fullPath, out int read);
            if (read < labels.Length)
                throw new InvalidDataException($"{fullPath}: file ends after {read} of {declaredCount} labels.");
            return labels;
        }

        private static string CheckArguments(string path, int? maxCount)
        {
            ArgumentException.ThrowIfNullOrEmpty(path);
            if (maxCount is int max)
                ArgumentOutOfRangeException.ThrowIfNegative(max, nameof(maxCount));
            return Path.GetFullPath(path);
        }

        private static Stream Open(string fullPath)
        {
            // FileStream's own message does not say which kind of file was wanted; this one does.
            if (!File.Exists(fullPath))
                throw new FileNotFoundException($"IDX file '{fullPath}' was not found.", fullPath);
            var file = new FileStream(fullPath, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1 << 16);
            try
            {
                Span<byte> start = stackalloc byte[2];
                int read = file.ReadAtLeast(start, 2, throwOnEndOfStream: false);
                file.Position = 0;
                return read == 2 && start[0] == 0x1f && start[1] == 0x8b ? new GZipStream(file, CompressionMode.Decompress) : file;
            }
            catch
            {
                file.Dispose();
                throw;
            }
        }

        /// <summary>Checks the magic number and returns the dimension sizes, each non-negative.</summary>
        private static int[] ReadHeader(Stream stream, string fullPath, int expectedMagic)
        {
            int dimensionCount = expectedMagic & 0xff;
            Span<byte> header = stackalloc byte[4 + 4 * dimensionCount];
            int read = Read(stream, header[..4], fullPath);
            if (read < 4)
                throw new InvalidDataException($"{fullPath}: file ends after {read} bytes, inside the 4-byte IDX magic number.");
            int magic = BinaryPrimitives.ReadInt32BigEndian(header);
            if (magic != expectedMagic)
                throw new InvalidDataException($"{fullPath}: expected IDX magic 0x{expectedMagic:X8} ({Describe(expectedMagic)}), found 0x{magic:X8} ({Describe(magic)}).");

            read += Read(stream, header[4..], fullPath);
            if (read < header.Length)
                throw new InvalidDataException($"{fullPath}: file ends after {read} bytes, inside the {header.Length}-byte IDX header.");
            var dimensions = new int[dimensionCount];
            for (int i = 0; i < dimensionCount; i++)
            {
                dimensions[i] = BinaryPrimitives.ReadInt32BigEndian(header[(4 + 4 * i)..]);
                // Sizes are unsigned in the format, but no real file comes near 2^31.
                if (dimensions[i] < 0)
                    throw new InvalidDataException($"{fullPath}: dimension {i} of the IDX header is {(uint)dimensions[i]}, which is too large.");
            }
            return dimensions;
        }

        /// <summary>
        /// Reads <paramref name="length"/> bytes, or as many as there are (<paramref name="read"/>). The buffer grows
        /// as data arrives, so a corrupt header claiming gigabytes fails as truncated instead of running out of memory.
        /// </summary>
        private static byte[] ReadBody(Stream stream, int length, string fullPath, out int read)
        {
            byte[] buffer = GC.AllocateUninitializedArray<byte>(Math.Min(length, InitialBodyBytes));
            read = Read(stream, buffer, fullPath);
            while (read == buffer.Length && buffer.Length < length)
            {
                Array.Resize(ref buffer, (int)Math.Min(length, 2L * buffer.Length));
                read += Read(stream, buffer.AsSpan(read), fullPath);
            }
            return buffer;
        }

        /// <summary>Reads until <paramref name="buffer"/> is full or the data ends; returns the bytes read.</summary>
        private static int Read(Stream stream, Span<byte> buffer, string fullPath)
        {
            try
            {
                return stream.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false);
            }
            catch (InvalidDataException e)
            {
                // GZipStream's message does not name the file.
                throw new InvalidDataException($"{fullPath}: corrupt gzip data: {e.Message}", e);
            }
        }

        private static string Describe(int magic)
        {
            if ((magic & unchecked((int)0xffff0000)) != 0)
                return "not an IDX file";
            string type = ((magic >> 8) & 0xff) switch
            {
                UnsignedByteType => "unsigned byte",
                0x09 => "signed byte",
                0x0B => "short",
                0x0C => "int",
                0x0D => "float",
                0x0E => "double",
                _ => $"unknown type 0x{(magic >> 8) & 0xff:X2}",
            };
            int dimensions = magic & 0xff;
            return $"{type}, {dimensions} dimension{(dimensions == 1 ? "" : "s")}";
        }
    }
}
