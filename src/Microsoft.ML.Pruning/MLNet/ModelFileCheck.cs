// Licensed under the MIT license.

using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.IO.Compression;
using System.Linq;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Pruning.MLNet
{
    /// <summary>
    /// Checks an ML.NET model file before ML.NET reads it: the zip's structure, the CRC-32 of every entry (which .NET's
    /// <see cref="ZipArchive"/> does not compare), and ML.NET's own header and string table at the start of every
    /// <c>Model.key</c>, which ML.NET reads before any component's loader runs and refuses with messages that name
    /// nothing. Every refusal is a <see cref="FormatException"/> naming the entry and the field.
    /// </summary>
    /// <remarks>
    /// The header layout mirrors ML.NET's <c>ModelHeader</c> (256 bytes, little endian):
    /// <code>
    /// 0x00 ulong  Signature            "ML\0MODEL"
    /// 0x08 uint   VerWritten           0x00010001 or 0x00010002
    /// 0x0C uint   VerReadable          ≤ VerWritten
    /// 0x10 long   FpModel              256: the component's block follows the header
    /// 0x18 long   CbModel              the block's length
    /// 0x20 long   FpStringTable        0, or FpModel + CbModel
    /// 0x28 long   CbStringTable        8 × string count
    /// 0x30 long   FpStringChars        FpStringTable + CbStringTable
    /// 0x38 long   CbStringChars        UTF-16 bytes of all strings
    /// 0x40 ulong  ModelSignature       the component's format signature
    /// 0x48 uint   ModelVerWritten
    /// 0x4C uint   ModelVerReadable     ≤ ModelVerWritten
    /// 0x50 byte[24] LoaderSignature    ASCII, zero padded
    /// 0x68 byte[24] LoaderSignatureAlt ASCII, zero padded
    /// 0x80 long   FpTail               where the tail signature is
    /// 0x88 long   FpLim                FpTail + 8 = the entry's length
    /// 0x90 long   FpAssemblyName       0, or right after the strings
    /// 0x98 uint   CbAssemblyName       UTF-16 bytes of the loader's assembly name
    /// tail: ulong "LE\0MODEL" reversed (0x4D4C004D4F44454C)
    /// </code>
    /// </remarks>
    internal static class ModelFileCheck
    {
        private const ulong SignatureValue = 0x4C45444F4D004C4DUL;
        private const ulong TailSignatureValue = 0x4D4C004D4F44454CUL;
        private const uint VerAssemblyNameSupported = 0x00010002;
        private const uint VerOldest = 0x00010001;
        private const int HeaderSize = 0x100;

        /// <summary>The largest model file read into memory for the check (2 GiB).</summary>
        internal const long MaxFileBytes = int.MaxValue;

        /// <summary>The largest entry the check extracts (1 GiB; a classifier's weights are bounded well below it).</summary>
        internal const long MaxEntryBytes = 1L << 30;

        /// <summary>Checks the model file in <paramref name="bytes"/>; <paramref name="source"/> names it in messages.</summary>
        /// <exception cref="FormatException">The file is damaged; the message names the entry and field.</exception>
        public static void Check(byte[] bytes, string source)
        {
            ZipArchive? archive = null;
            try
            {
                archive = new ZipArchive(new MemoryStream(bytes, writable: false), ZipArchiveMode.Read);
                _ = archive.Entries; // the central directory is read here
            }
            catch (InvalidDataException ex)
            {
                archive?.Dispose();
                throw new FormatException($"{source}: not a readable zip archive ({ex.Message}).", ex);
            }
            using (archive)
            {
                if (archive.Entries.Count == 0)
                    throw new FormatException($"{source}: the zip archive has no entries; it is not an ML.NET model.");
                var names = new HashSet<string>(StringComparer.Ordinal);
                foreach (ZipArchiveEntry entry in archive.Entries)
                {
                    if (!names.Add(entry.FullName))
                        throw new FormatException($"{source}: zip entry '{entry.FullName}' appears twice; the file is damaged.");
                    byte[] content = Extract(entry, source);
                    if (entry.FullName.EndsWith("Model.key", StringComparison.Ordinal))
                        CheckHeader(content, $"{source}: zip entry '{entry.FullName}'");
                }
                if (!archive.Entries.Any(e => e.FullName is "TransformerChain/Model.key" or "Model.key"
                    || e.FullName.EndsWith("/Model.key", StringComparison.Ordinal)))
                    throw new FormatException($"{source}: the zip archive has no Model.key entry; it is not an ML.NET model.");
            }
        }

        /// <summary>
        /// After ML.NET refused a file that passed <see cref="Check"/>: loads every component of the file on its own,
        /// deepest folder first, and names the first whose <c>Model.key</c> ML.NET refuses (its loader signature, model
        /// signature or version, or the component's own fields). Null when every component loads on its own.
        /// </summary>
        public static string? FindRefusedEntry(IHostEnvironment env, byte[] bytes)
        {
            string[] folders;
            using (var archive = new ZipArchive(new MemoryStream(bytes, writable: false), ZipArchiveMode.Read))
            {
                folders = archive.Entries.Select(e => e.FullName.Replace('\\', '/'))
                    .Where(n => n == ModelLoadContext.ModelStreamName || n.EndsWith("/" + ModelLoadContext.ModelStreamName, StringComparison.Ordinal))
                    .Select(n => n.Length == ModelLoadContext.ModelStreamName.Length ? "" : n[..^(ModelLoadContext.ModelStreamName.Length + 1)])
                    .OrderByDescending(f => f.Count(c => c == '/')).ThenBy(f => f, StringComparer.Ordinal).ToArray();
            }
            using var repository = RepositoryReader.Open(new MemoryStream(bytes, writable: false), env);
            foreach (string folder in folders)
            {
                try
                {
                    ModelLoadContext.LoadModel<object, SignatureLoadModel>(env, out object component, repository, folder);
                    (component as IDisposable)?.Dispose();
                }
                catch (Exception ex) when (ex is not OutOfMemoryException)
                {
                    string entry = folder.Length == 0 ? ModelLoadContext.ModelStreamName : folder + "/" + ModelLoadContext.ModelStreamName;
                    string reason = string.Join(": ", Chain(ex).Where(e => e is not System.Reflection.TargetInvocationException)
                        .Select(e => e.Message).Distinct());
                    return $"zip entry '{entry}': ML.NET refused this component ({reason}); its loader signature, model signature or version in ML.NET's header, or its own fields, are damaged";
                }
            }
            return null;
        }

        private static IEnumerable<Exception> Chain(Exception ex)
        {
            for (Exception? e = ex; e is not null; e = e.InnerException)
                yield return e;
        }

        private static byte[] Extract(ZipArchiveEntry entry, string source)
        {
            string name = $"{source}: zip entry '{entry.FullName}'";
            if (entry.Length < 0 || entry.Length > MaxEntryBytes)
                throw new FormatException($"{name}: declares {entry.Length} bytes, more than the {MaxEntryBytes} a model entry may hold.");
            var content = new byte[entry.Length];
            int read = 0;
            try
            {
                using Stream stream = entry.Open();
                while (read < content.Length)
                {
                    int n = stream.Read(content, read, content.Length - read);
                    if (n == 0)
                        break;
                    read += n;
                }
                if (read == content.Length && stream.ReadByte() >= 0)
                    throw new FormatException($"{name}: holds more than the {entry.Length} bytes the zip directory declares; the file is damaged.");
            }
            catch (Exception ex) when (ex is InvalidDataException or IOException or NotSupportedException)
            {
                throw new FormatException($"{name}: cannot be decompressed ({ex.Message}); the file is damaged.", ex);
            }
            if (read != content.Length)
                throw new FormatException($"{name}: holds {read} bytes, the zip directory declares {entry.Length}; the file is damaged.");
            uint crc = Crc32.Compute(content);
            if (crc != entry.Crc32)
                throw new FormatException(FormattableString.Invariant(
                    $"{name}: its CRC-32 is 0x{crc:X8}, the zip directory records 0x{entry.Crc32:X8}; the file is damaged."));
            return content;
        }

        /// <summary>Checks ML.NET's header, string table, assembly name and tail of one <c>Model.key</c>.</summary>
        internal static void CheckHeader(byte[] key, string name)
        {
            if (key.Length < HeaderSize + sizeof(ulong))
                throw Damaged(name, $"holds {key.Length} bytes, fewer than ML.NET's {HeaderSize}-byte model header and its tail");
            ReadOnlySpan<byte> h = key;
            ulong U64(int at) => BinaryPrimitives.ReadUInt64LittleEndian(key.AsSpan(at));
            long I64(int at) => BinaryPrimitives.ReadInt64LittleEndian(key.AsSpan(at));
            uint U32(int at) => BinaryPrimitives.ReadUInt32LittleEndian(key.AsSpan(at));
            long length = key.Length;

            Require(U64(0x00) == SignatureValue, name, "Signature", Hex(U64(0x00)), "the ML.NET model signature");
            uint written = U32(0x08), readable = U32(0x0C);
            Require(written >= VerOldest, name, "VerWritten", Hex(written), "at least 0x00010001");
            Require(readable >= VerOldest && readable <= written && readable <= VerAssemblyNameSupported, name, "VerReadable", Hex(readable),
                "at least 0x00010001 and at most VerWritten and 0x00010002 (the newest header this ML.NET reads)");
            long fpModel = I64(0x10), cbModel = I64(0x18);
            Require(fpModel == HeaderSize, name, "FpModel", fpModel, "256 (the block follows the header)");
            Require(cbModel >= 0 && cbModel <= length - HeaderSize, name, "CbModel", cbModel, $"between 0 and {length - HeaderSize}");
            long fpStrings = I64(0x20), cbStrings = I64(0x28), fpChars = I64(0x30), cbChars = I64(0x38);
            long end = fpModel + cbModel;
            if (fpStrings == 0)
            {
                Require(cbStrings == 0, name, "CbStringTable", cbStrings, "0 when there is no string table");
                Require(fpChars == 0, name, "FpStringChars", fpChars, "0 when there is no string table");
                Require(cbChars == 0, name, "CbStringChars", cbChars, "0 when there is no string table");
            }
            else
            {
                Require(fpStrings == end, name, "FpStringTable", fpStrings, $"{end} (right after the block)");
                Require(cbStrings > 0 && cbStrings % sizeof(long) == 0 && cbStrings <= length - fpStrings, name, "CbStringTable", cbStrings,
                    $"a positive multiple of 8 of at most {length - fpStrings}");
                Require(fpChars == fpStrings + cbStrings, name, "FpStringChars", fpChars, $"{fpStrings + cbStrings} (right after the string table)");
                Require(cbChars >= 0 && cbChars % sizeof(char) == 0 && cbChars <= length - fpChars, name, "CbStringChars", cbChars,
                    $"an even count between 0 and {length - fpChars}");
                long previous = 0;
                for (long i = 0, count = cbStrings / sizeof(long); i < count; i++)
                {
                    long offset = I64(checked((int)(fpStrings + i * sizeof(long))));
                    if (offset < previous || offset > cbChars || offset % sizeof(char) != 0)
                        throw Damaged(name, FormattableString.Invariant(
                            $"string {i} of ML.NET's string table ends at {offset}; it must be even and between {previous} and CbStringChars ({cbChars})"));
                    previous = offset;
                }
                Require(previous == cbChars, name, "CbStringChars", cbChars, $"{previous} (where the last string ends)");
                end = fpChars + cbChars;
            }
            ModelSignatureAndLoader(h, name);
            long fpAssembly = I64(0x90);
            uint cbAssembly = U32(0x98);
            if (written >= VerAssemblyNameSupported && fpAssembly != 0)
            {
                Require(fpAssembly == end, name, "FpAssemblyName", fpAssembly, $"{end} (right after the strings)");
                Require(cbAssembly % sizeof(char) == 0 && cbAssembly <= length - fpAssembly, name, "CbAssemblyName", cbAssembly,
                    $"an even count of at most {length - fpAssembly}");
                end = fpAssembly + cbAssembly;
            }
            else
            {
                Require(cbAssembly == 0 || written < VerAssemblyNameSupported, name, "CbAssemblyName", cbAssembly, "0 when there is no assembly name");
            }
            long fpTail = I64(0x80), fpLim = I64(0x88);
            Require(fpTail == end, name, "FpTail", fpTail, $"{end} (right after the strings and assembly name)");
            Require(fpLim == fpTail + sizeof(ulong), name, "FpLim", fpLim, $"{fpTail + sizeof(ulong)} (FpTail + 8)");
            Require(fpLim <= length, name, "FpLim", fpLim, $"at most the entry's {length} bytes");
            ulong tail = U64(checked((int)fpTail));
            Require(tail == TailSignatureValue, name, "tail signature", Hex(tail), "the ML.NET model tail signature");
        }

        /// <summary>The component's format signature and loader names: what ML.NET looks its loader up by.</summary>
        private static void ModelSignatureAndLoader(ReadOnlySpan<byte> h, string name)
        {
            uint written = BinaryPrimitives.ReadUInt32LittleEndian(h[0x48..]), readable = BinaryPrimitives.ReadUInt32LittleEndian(h[0x4C..]);
            Require(readable <= written, name, "ModelVerReadable", Hex(readable), $"at most ModelVerWritten ({Hex(written)})");
            LoaderName(h.Slice(0x50, 24), name, "LoaderSignature", required: true);
            LoaderName(h.Slice(0x68, 24), name, "LoaderSignatureAlt", required: false);
        }

        private static void LoaderName(ReadOnlySpan<byte> bytes, string name, string field, bool required)
        {
            int length = bytes.IndexOf((byte)0);
            if (length < 0)
                length = bytes.Length;
            if (required && length == 0)
                throw Damaged(name, $"ML.NET's header field {field} is empty; it names the component's loader");
            for (int i = 0; i < bytes.Length; i++)
            {
                byte b = bytes[i];
                bool ok = i < length ? b is >= 0x20 and <= 0x7E : b == 0;
                if (!ok)
                    throw Damaged(name, FormattableString.Invariant(
                        $"ML.NET's header field {field} has byte 0x{b:X2} at position {i}; a loader name is printable ASCII padded with zeros"));
            }
        }

        private static void Require(bool condition, string name, string field, object value, string expected)
        {
            if (!condition)
                throw Damaged(name, string.Format(CultureInfo.InvariantCulture, "ML.NET's header field {0} is {1}; it must be {2}", field, value, expected));
        }

        private static string Hex(ulong value) => "0x" + value.ToString("X", CultureInfo.InvariantCulture);

        private static FormatException Damaged(string name, string problem) => new($"{name}: {problem}. The file is damaged.");

        /// <summary>CRC-32 (IEEE 802.3, the zip format's), table driven.</summary>
        internal static class Crc32
        {
            private static readonly uint[] s_table = CreateTable();

            private static uint[] CreateTable()
            {
                var table = new uint[256];
                for (uint i = 0; i < 256; i++)
                {
                    uint c = i;
                    for (int k = 0; k < 8; k++)
                        c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
                    table[i] = c;
                }
                return table;
            }

            public static uint Compute(ReadOnlySpan<byte> data)
            {
                uint crc = 0xFFFFFFFFu;
                foreach (byte b in data)
                    crc = s_table[(crc ^ b) & 0xFF] ^ (crc >> 8);
                return ~crc;
            }
        }
    }
}
