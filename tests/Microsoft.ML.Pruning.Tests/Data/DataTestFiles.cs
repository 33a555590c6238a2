// Licensed under the MIT license.

using System;
using System.Buffers.Binary;
using System.IO;
using System.IO.Compression;

namespace Microsoft.ML.Pruning.Tests.Data
{
    /// <summary>Writes small IDX files and scratch folders for the data tests.</summary>
    internal static class DataTestFiles
    {
        public static string CreateTempDirectory()
        {
            string directory = Path.Combine(Path.GetTempPath(), "pruning-data-" + Guid.NewGuid().ToString("N"));
            Directory.CreateDirectory(directory);
            return directory;
        }

        public static void DeleteDirectory(string? directory)
        {
            if (directory is not null && Directory.Exists(directory))
                Directory.Delete(directory, recursive: true);
        }

        /// <summary>The bytes of an IDX file: big-endian magic and sizes, then <paramref name="body"/>.</summary>
        public static byte[] Idx(int magic, int[] dimensions, byte[] body)
        {
            var bytes = new byte[4 + 4 * dimensions.Length + body.Length];
            BinaryPrimitives.WriteInt32BigEndian(bytes, magic);
            for (int i = 0; i < dimensions.Length; i++)
                BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(4 + 4 * i), dimensions[i]);
            body.CopyTo(bytes, 4 + 4 * dimensions.Length);
            return bytes;
        }

        public static byte[] Gzip(byte[] bytes)
        {
            using var output = new MemoryStream();
            using (var gzip = new GZipStream(output, CompressionLevel.Fastest))
                gzip.Write(bytes);
            return output.ToArray();
        }

        public static string Write(string path, byte[] bytes, bool gzip)
        {
            File.WriteAllBytes(path, gzip ? Gzip(bytes) : bytes);
            return path;
        }

        public static string WriteImages(string path, int count, int height, int width, byte[] pixels, bool gzip = false)
            => Write(path, Idx(0x803, new[] { count, height, width }, pixels), gzip);

        public static string WriteLabels(string path, byte[] labels, bool gzip = false)
            => Write(path, Idx(0x801, new[] { labels.Length }, labels), gzip);

        /// <summary>Distinct, easily recomputed pixel values: pixel i is (i·37 + 11) mod 256.</summary>
        public static byte[] Pattern(int length)
        {
            var pixels = new byte[length];
            for (int i = 0; i < length; i++)
                pixels[i] = (byte)((i * 37 + 11) % 256);
            return pixels;
        }
    }
}
