// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.IO.Compression;
using System.Linq;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using System.Threading;
using Microsoft.ML;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Training;
using Microsoft.ML.Pruning.Pruners.ShiftAttention;
using Microsoft.ML.Pruning.Pruners;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Data;

namespace Microsoft.ML.Pruning.Fuzzing
{
    /// <summary>What loading and scoring one mutated model file gave.</summary>
    internal enum FuzzOutcome
    {
        /// <summary>Loaded, and scores the test images exactly as the original.</summary>
        LoadedIdentical,

        /// <summary>Loaded, scores differ but are finite (only expected from re-sealed, i.e. deliberately consistent, edits).</summary>
        LoadedDifferent,

        /// <summary>Refused with a message naming the entry or field.</summary>
        ClearError,

        /// <summary>Refused with a message that names nothing, or with an exception type that means a bug.</summary>
        UnclearError,

        /// <summary>Did not finish within the time limit.</summary>
        Hang,

        /// <summary>Went past the memory bound.</summary>
        OverMemory,

        /// <summary>Loaded and gave a NaN or infinite score.</summary>
        NonFiniteScores,

        /// <summary>Loaded and threw at the first prediction.</summary>
        FailsAtFirstPrediction,
    }

    /// <summary>One mutated model file.</summary>
    internal sealed record FuzzCase(string Model, string Class, string Description, byte[] Zip, bool Resealed);

    /// <summary>The result of one case.</summary>
    internal sealed record FuzzResult(FuzzCase Case, FuzzOutcome Outcome, string Message, double Seconds, long PeakBytes);

    /// <summary>
    /// Mutations of a saved model zip, as an attacker or a bad disk would make them: zip truncations and byte flips,
    /// flips, truncations, deletions and swaps of the classifier's entries, int32 edits of its <c>Model.key</c>, and
    /// consistent (re-sealed: lengths and SHA-256 recomputed) edits of the label values, of <c>Network.json</c> fields and
    /// of <c>Weights.bin</c> headers and values, which only the loader's validation stands against.
    /// </summary>
    internal sealed class ModelFileFuzzer
    {
        public const string ModelKey = "Model.key", NetworkJson = "Network.json", WeightsBin = "Weights.bin";

        private static readonly long[] s_interesting =
        {
            0, -1, 1, 2, 3, 7, 8, 9, 15, 16, 255, 256, 1000, 65535, 65536, 1_000_000, 3_000_000, 1_000_000_000, int.MaxValue, int.MinValue,
        };

        private static readonly string[] s_interestingJson =
        {
            "0", "-1", "1", "2", "3", "9", "255", "1000", "65536", "1000000", "3000000", "1000000000", "2147483647", "-2147483648",
            "0.5", "1e30", "-1e30", "1e-45", "true", "false", "null", "[]", "[0]", "\"x\"",
        };

        private readonly byte[] _zip;
        private readonly string _folder;
        private readonly Dictionary<string, byte[]> _entries;
        private readonly string[] _columnNames;

        /// <param name="zip">A model zip saved by the library.</param>
        /// <param name="columnNames">The classifier's feature, score, predicted label and label column names (sealed in Model.key).</param>
        public ModelFileFuzzer(byte[] zip, string[] columnNames)
        {
            _zip = zip;
            _columnNames = columnNames;
            _entries = ReadEntries(zip);
            string json = _entries.Keys.Single(k => k.EndsWith("/" + NetworkJson, StringComparison.Ordinal) || k == NetworkJson);
            _folder = json[..^NetworkJson.Length];
        }

        /// <summary>The mutation classes, each a function of a random generator.</summary>
        public IReadOnlyList<(string Class, bool Resealed, Func<Random, (string, byte[])> Make)> Classes() => new (string, bool, Func<Random, (string, byte[])>)[]
        {
            ("zip-truncate", false, r => { int at = r.Next(_zip.Length); return ($"cut at {at}", _zip[..at]); }),
            ("zip-flip", false, r => FlipBytes(_zip, r)),
            ("entry-flip " + ModelKey, false, r => EditEntry(ModelKey, b => FlipBytes(b, r, Payload(b)), reseal: false)),
            ("entry-flip " + NetworkJson, false, r => EditEntry(NetworkJson, b => FlipBytes(b, r), reseal: false)),
            ("entry-flip " + WeightsBin, false, r => EditEntry(WeightsBin, b => FlipBytes(b, r), reseal: false)),
            ("entry-truncate", false, r =>
            {
                string name = Pick(r, NetworkJson, WeightsBin);
                return EditEntry(name, b => { int at = r.Next(b.Length); return ($"{name} cut at {at}", b[..at]); }, reseal: false);
            }),
            ("entry-delete-swap", false, r => DeleteOrSwap(r)),
            ("header-int " + ModelKey, false, r => EditEntry(ModelKey, b => SetInt(b, r, Payload(b)), reseal: false)),
            ("label-edit (resealed)", true, r => EditLabels(r)),
            ("json-edit (resealed)", true, r => EditEntry(NetworkJson, b => EditJson(b, r), reseal: true)),
            ("weights-edit (resealed)", true, r => EditEntry(WeightsBin, b => EditWeights(b, r), reseal: true)),
        };

        /// <summary>Flips in ML.NET's own header of Model.key (read by ML.NET before the classifier's loader runs).</summary>
        public (string Class, bool Resealed, Func<Random, (string, byte[])> Make) MLNetHeaderClass()
            => ("ML.NET header of " + ModelKey, false, r => EditEntry(ModelKey, b => FlipBytes(b, r, MLNetHeader(b)), reseal: false));

        /// <summary><paramref name="perClass"/> cases of every class, from a fixed seed.</summary>
        public IEnumerable<FuzzCase> Cases(string model, int perClass, int seed)
        {
            var random = new Random(seed);
            foreach (var (name, resealed, make) in Classes())
            {
                for (int i = 0; i < perClass; i++)
                {
                    var (description, zip) = make(random);
                    yield return new FuzzCase(model, name, description, zip, resealed);
                }
            }
        }

        private static T Pick<T>(Random r, params T[] items) => items[r.Next(items.Length)];

        /// <summary>The bytes of Model.key the classifier writes and reads itself (the column name ids through the seal); the
        /// rest is ML.NET's header and string table, which ML.NET reads before the classifier's loader runs.</summary>
        public (int Start, int End) Payload(byte[] model)
        {
            var (labelStart, labelLength, _) = SealedLayout(model);
            return (labelStart - 4 - 16, labelStart + labelLength + 80 + 32);
        }

        /// <summary>ML.NET's part of Model.key: its header before the classifier's fields.</summary>
        public (int Start, int End) MLNetHeader(byte[] model) => (0, Payload(model).Start);

        private static (string, byte[]) FlipBytes(byte[] source, Random r) => FlipBytes(source, r, (0, source.Length));

        private static (string, byte[]) FlipBytes(byte[] source, Random r, (int Start, int End) range)
        {
            byte[] copy = source.ToArray();
            int flips = 1 + r.Next(3);
            var at = new List<int>();
            for (int i = 0; i < flips && copy.Length > 0; i++)
            {
                int p = range.Start + r.Next(range.End - range.Start);
                copy[p] ^= (byte)(1 << r.Next(8));
                at.Add(p);
            }
            return ($"bit flips at {string.Join(",", at)}", copy);
        }

        private static (string, byte[]) SetInt(byte[] source, Random r, (int Start, int End) range)
        {
            byte[] copy = source.ToArray();
            int at = range.Start + r.Next(Math.Max(1, range.End - 4 - range.Start));
            long value = s_interesting[r.Next(s_interesting.Length)];
            BitConverter.TryWriteBytes(copy.AsSpan(at, 4), (int)value);
            return ($"int32 at 0x{at:X} = {(int)value}", copy);
        }

        private (string, byte[]) DeleteOrSwap(Random r)
        {
            var entries = new Dictionary<string, byte[]>(_entries);
            // Model.key itself is opened and parsed by ML.NET before the classifier's loader runs (MLNetHeaderClass).
            string a = _folder + Pick(r, NetworkJson, WeightsBin);
            string b = _folder + Pick(r, NetworkJson, WeightsBin);
            if (r.Next(2) == 0 || a == b)
            {
                entries.Remove(a);
                return ($"delete {a}", WriteEntries(entries));
            }
            (entries[a], entries[b]) = (entries[b], entries[a]);
            return ($"swap {a} and {b}", WriteEntries(entries));
        }

        /// <summary>The file with entry <paramref name="name"/> of the classifier replaced by <paramref name="edit"/> of its
        /// content, re-sealed (lengths and SHA-256s in Model.key recomputed) when <paramref name="reseal"/>.</summary>
        public byte[] WithEntry(string name, Func<byte[], byte[]> edit, bool reseal) => EditEntry(name, b => ("", edit(b)), reseal).Item2;

        /// <summary>The content of entry <paramref name="name"/> of the classifier.</summary>
        public byte[] Entry(string name) => _entries[_folder + name];

        private (string, byte[]) EditEntry(string name, Func<byte[], (string, byte[])> edit, bool reseal)
        {
            var entries = new Dictionary<string, byte[]>(_entries);
            var (description, edited) = edit(entries[_folder + name]);
            entries[_folder + name] = edited;
            if (reseal)
                Reseal(entries);
            return ($"{name}: {description}", WriteEntries(entries));
        }

        /// <summary>Finds the sealed fields of Model.key by the SHA-256 of the original Network.json they hold.</summary>
        private (int LabelStart, int LabelLength, int JsonHash) SealedLayout(byte[] model)
        {
            byte[] jsonHash = SHA256.HashData(_entries[_folder + NetworkJson]);
            int at = model.AsSpan().IndexOf(jsonHash);
            if (at < 0)
                throw new InvalidOperationException("Model.key does not hold the SHA-256 of Network.json: not a sealed model file.");
            int labelEnd = at - 8;
            // From the longest: a class name's own length prefix also matches its distance to the end.
            for (int length = labelEnd - 4; length >= 1; length--)
            {
                if (BitConverter.ToInt32(model, labelEnd - length - 4) == length)
                    return (labelEnd - length, length, at);
            }
            throw new InvalidOperationException("The label values block of Model.key was not found.");
        }

        /// <summary>Recomputes the lengths, SHA-256s and seal of Model.key for the current Network.json and Weights.bin.</summary>
        private void Reseal(Dictionary<string, byte[]> entries)
        {
            byte[] model = entries[_folder + ModelKey].ToArray();
            var (labelStart, labelLength, jsonHashAt) = SealedLayout(_entries[_folder + ModelKey]);
            byte[] json = entries[_folder + NetworkJson], weights = entries[_folder + WeightsBin];
            var fields = new ModelFileLimits.SealedFields(model[labelStart..(labelStart + labelLength)], json.Length, SHA256.HashData(json),
                weights.Length, SHA256.HashData(weights));
            using (var memory = new MemoryStream(model))
            using (var writer = new BinaryWriter(memory))
            {
                memory.Position = labelStart - 4;
                fields.Write(writer);
                writer.Write(fields.Seal(_columnNames));
            }
            entries[_folder + ModelKey] = model;
        }

        private (string, byte[]) EditLabels(Random r)
        {
            var entries = new Dictionary<string, byte[]>(_entries);
            byte[] model = entries[_folder + ModelKey].ToArray();
            var (labelStart, labelLength, _) = SealedLayout(model);
            string description;
            if (r.Next(2) == 0)
            {
                int at = labelStart + r.Next(Math.Max(1, labelLength - 4));
                long value = s_interesting[r.Next(s_interesting.Length)];
                BitConverter.TryWriteBytes(model.AsSpan(at, 4), (int)value);
                description = $"label values: int32 at +{at - labelStart} = {(int)value}";
            }
            else
            {
                int at = labelStart + r.Next(labelLength);
                model[at] = (byte)r.Next(256);
                description = $"label values: byte at +{at - labelStart} = {model[at]}";
            }
            return (description, WithLabelEdit(_ => model));
        }

        /// <summary>The file with Model.key replaced by <paramref name="edit"/> of it (same length), its seal recomputed over the
        /// edited label values.</summary>
        public byte[] WithLabelEdit(Func<byte[], byte[]> edit)
        {
            var entries = new Dictionary<string, byte[]>(_entries);
            var (labelStart, labelLength, _) = SealedLayout(entries[_folder + ModelKey]);
            byte[] model = edit(entries[_folder + ModelKey].ToArray());
            entries[_folder + ModelKey] = model;
            var fields = new ModelFileLimits.SealedFields(model[labelStart..(labelStart + labelLength)], entries[_folder + NetworkJson].Length,
                SHA256.HashData(entries[_folder + NetworkJson]), entries[_folder + WeightsBin].Length, SHA256.HashData(entries[_folder + WeightsBin]));
            fields.Seal(_columnNames).CopyTo(model, labelStart + labelLength + 80);
            return WriteEntries(entries);
        }

        private static (string, byte[]) EditJson(byte[] source, Random r)
        {
            string json = Encoding.UTF8.GetString(source);
            switch (r.Next(6))
            {
                case 0:
                case 1:
                case 2:
                {
                    // Replace one value (number, boolean, string or array) of a field.
                    var fields = Regex.Matches(json, "\"(\\w+)\":(-?[0-9.eE+-]+|true|false|\\[[^\\[\\]]*\\]|\"[^\"]*\")");
                    Match m = fields[r.Next(fields.Count)];
                    string value = s_interestingJson[r.Next(s_interestingJson.Length)];
                    if (m.Groups[1].Value == "kind")
                        value = "\"" + Pick(r, "conv2d", "linear", "residual", "maxpool2d", "flatten", "normalize", "shiftpointwise2d", "shift2d", "batchnorm2d", "x") + "\"";
                    return ($"{m.Groups[1].Value} {m.Groups[2].Value} -> {value} at {m.Index}",
                        Encoding.UTF8.GetBytes(json[..m.Groups[2].Index] + value + json[(m.Groups[2].Index + m.Groups[2].Length)..]));
                }
                case 3:
                {
                    // Nest the layers in residual blocks.
                    int depth = Pick(r, 2, 9, 30);
                    int start = json.IndexOf("\"Layers\":", StringComparison.Ordinal) + "\"Layers\":".Length;
                    string layers = json[start..json.LastIndexOf('}')];
                    for (int i = 0; i < depth; i++)
                        layers = $"[{{\"kind\":\"residual\",\"Body\":{layers},\"Shortcut\":[],\"Name\":\"r{i}\"}}]";
                    return ($"layers nested in {depth} residual blocks", Encoding.UTF8.GetBytes(json[..start] + layers + "}"));
                }
                case 4:
                {
                    int size = Pick(r, 1 << 10, 5 << 20);
                    return ($"{size} bytes of whitespace appended", Encoding.UTF8.GetBytes(json + new string(' ', size)));
                }
                default:
                {
                    // Scale a dimension pair: fc OutFeatures and the next InFeatures, so the definition stays consistent.
                    string value = Pick(r, "3000000", "100000", "0", "1");
                    string edited = Regex.Replace(json, "\"OutFeatures\":(\\d+)", m => $"\"OutFeatures\":{value}", RegexOptions.None);
                    return ($"every OutFeatures -> {value}", Encoding.UTF8.GetBytes(edited));
                }
            }
        }

        /// <summary>Offsets of each tensor's fields in a Weights.bin (see TensorStore's format).</summary>
        private static List<(string Name, int Type, int Rank, int Encoding, int Data, int DataLength)> TensorLayout(byte[] weights)
        {
            var result = new List<(string, int, int, int, int, int)>();
            using var reader = new BinaryReader(new MemoryStream(weights));
            reader.ReadInt32();
            reader.ReadInt32();
            int count = reader.ReadInt32();
            for (int i = 0; i < count; i++)
            {
                string name = reader.ReadString();
                int type = (int)reader.BaseStream.Position;
                byte element = reader.ReadByte();
                int rank = (int)reader.BaseStream.Position;
                int dims = reader.ReadInt32();
                long elements = 1;
                for (int d = 0; d < dims; d++)
                    elements *= reader.ReadInt64();
                int encoding = (int)reader.BaseStream.Position;
                byte kind = reader.ReadByte();
                int data = (int)reader.BaseStream.Position;
                int size = element switch { 0 => 4, 1 => 8, _ => 1 };
                long length = elements * size;
                if (kind == 1)
                {
                    byte[] mask = reader.ReadBytes((int)((elements + 7) / 8));
                    length = mask.Length + 4L * mask.Sum(b => System.Numerics.BitOperations.PopCount(b));
                    reader.BaseStream.Position = data;
                }
                reader.BaseStream.Position = data + length;
                result.Add((name, type, rank, encoding, data, (int)length));
            }
            return result;
        }

        private static (string, byte[]) EditWeights(byte[] source, Random r)
        {
            byte[] copy = source.ToArray();
            var tensors = TensorLayout(source);
            var t = tensors[r.Next(tensors.Count)];
            switch (r.Next(7))
            {
                case 0:
                    copy[t.Type] = (byte)Pick(r, 0, 1, 2, 3);
                    return ($"'{t.Name}' element type -> {copy[t.Type]}", copy);
                case 1:
                {
                    int at = t.Rank + 4 * r.Next(1 + (t.Encoding - t.Rank - 4) / 8 * 2);
                    long value = s_interesting[r.Next(s_interesting.Length)];
                    BitConverter.TryWriteBytes(copy.AsSpan(at, 4), (int)value);
                    return ($"'{t.Name}' rank/shape int32 at 0x{at:X} = {(int)value}", copy);
                }
                case 2:
                    copy[t.Encoding] = (byte)Pick(r, 0, 1, 2);
                    return ($"'{t.Name}' encoding -> {copy[t.Encoding]}", copy);
                case 3:
                case 4:
                {
                    if (t.DataLength < 4)
                        return ($"'{t.Name}' appended 4 bytes", copy.Concat(new byte[4]).ToArray());
                    int at = t.Data + 4 * r.Next(t.DataLength / 4);
                    float value = Pick(r, float.NaN, float.PositiveInfinity, float.NegativeInfinity, 1e38f, -1e20f, 1e9f, 0f, -1f);
                    BitConverter.TryWriteBytes(copy.AsSpan(at, 4), value);
                    return ($"'{t.Name}' value at 0x{at:X} = {value}", copy);
                }
                case 5:
                {
                    int at = t.Data + r.Next(Math.Max(1, t.DataLength));
                    copy[Math.Min(at, copy.Length - 1)] = (byte)r.Next(256);
                    return ($"'{t.Name}' data byte at 0x{at:X} = {copy[Math.Min(at, copy.Length - 1)]}", copy);
                }
                default:
                    return ("4 bytes appended", copy.Concat(new byte[] { 1, 2, 3, 4 }).ToArray());
            }
        }

        public static Dictionary<string, byte[]> ReadEntries(byte[] zip)
        {
            using var archive = new ZipArchive(new MemoryStream(zip), ZipArchiveMode.Read);
            var result = new Dictionary<string, byte[]>(StringComparer.Ordinal);
            foreach (ZipArchiveEntry entry in archive.Entries)
            {
                using var stream = entry.Open();
                using var memory = new MemoryStream();
                stream.CopyTo(memory);
                result[entry.FullName] = memory.ToArray();
            }
            return result;
        }

        public static byte[] WriteEntries(Dictionary<string, byte[]> entries)
        {
            using var memory = new MemoryStream();
            using (var archive = new ZipArchive(memory, ZipArchiveMode.Create, leaveOpen: true))
            {
                foreach (var (name, bytes) in entries)
                {
                    using var stream = archive.CreateEntry(name, CompressionLevel.Fastest).Open();
                    stream.Write(bytes);
                }
            }
            return memory.ToArray();
        }
    }

    /// <summary>Loads and scores a mutated model file under a time limit, watching the process's memory.</summary>
    internal static class FuzzRunner
    {
        /// <summary>Words a clear failure names: an entry of the zip, the zip itself.</summary>
        private static readonly string[] s_names = { ModelFileFuzzer.ModelKey, ModelFileFuzzer.NetworkJson, ModelFileFuzzer.WeightsBin, "zip", "archive", "entry" };

        private static readonly Type[] s_bugTypes =
        {
            typeof(OverflowException), typeof(DivideByZeroException), typeof(NullReferenceException), typeof(IndexOutOfRangeException),
            typeof(ArgumentOutOfRangeException), typeof(InvalidCastException),
        };

        /// <param name="zip">The file.</param>
        /// <param name="score">Scores a loaded model: the scores of the original's test images, or of images of the model's own
        /// shape when its input differs; null when it cannot tell.</param>
        /// <param name="original">The original model's scores.</param>
        /// <param name="timeout">The time limit of load and scoring.</param>
        /// <param name="memoryBound">The bound on the process's working set growth and on managed allocation.</param>
        /// <param name="checkedLoad">Load with the library's <c>LoadChecked</c> (zip, CRC-32 and ML.NET's headers checked
        /// first) instead of ML.NET's <c>Load</c>.</param>
        public static FuzzResult Run(FuzzCase fuzzCase, Func<ITransformer, (float[][] Scores, bool SameInput)> score, float[][] original,
            TimeSpan timeout, long memoryBound, bool checkedLoad = false)
        {
            string path = Path.Combine(Path.GetTempPath(), "pruning-fuzz-" + Guid.NewGuid().ToString("N") + ".zip");
            File.WriteAllBytes(path, fuzzCase.Zip);
            using var process = Process.GetCurrentProcess();
            process.Refresh();
            long baseline = process.WorkingSet64, peak = 0, managed = 0;
            FuzzOutcome? outcome = null;
            string message = "";
            var watch = Stopwatch.StartNew();
            var thread = new Thread(() =>
            {
                long before = GC.GetAllocatedBytesForCurrentThread();
                ITransformer model;
                try
                {
                    var ml = new MLContext(seed: 1);
                    model = checkedLoad ? ml.Model.LoadChecked(path, out _) : ml.Model.Load(path, out _);
                }
                catch (Exception ex)
                {
                    managed = GC.GetAllocatedBytesForCurrentThread() - before;
                    // The file's own name does not name a problem.
                    (outcome, message) = Classify(ex, path);
                    return;
                }
                try
                {
                    var (scores, sameInput) = score(model);
                    if (scores.Any(row => row.Any(v => !float.IsFinite(v))))
                        (outcome, message) = (FuzzOutcome.NonFiniteScores, "");
                    else if (sameInput && scores.Length == original.Length && scores.Zip(original).All(p => p.First.AsSpan().SequenceEqual(p.Second)))
                        outcome = FuzzOutcome.LoadedIdentical;
                    else
                        outcome = FuzzOutcome.LoadedDifferent;
                }
                catch (Exception ex)
                {
                    (outcome, message) = (FuzzOutcome.FailsAtFirstPrediction, Describe(ex));
                }
                finally
                {
                    managed = GC.GetAllocatedBytesForCurrentThread() - before;
                    Dispose(model);
                }
            }, 16 << 20) { IsBackground = true };
            thread.Start();
            bool done;
            while (!(done = thread.Join(5)) && watch.Elapsed < timeout)
            {
                process.Refresh();
                peak = Math.Max(peak, process.WorkingSet64 - baseline);
                if (peak > memoryBound)
                    break;
            }
            double seconds = watch.Elapsed.TotalSeconds;
            process.Refresh();
            peak = Math.Max(Math.Max(peak, process.WorkingSet64 - baseline), managed);
            try
            {
                if (done)
                    File.Delete(path);
            }
            catch (IOException)
            {
            }
            if (peak > memoryBound)
                return new FuzzResult(fuzzCase, FuzzOutcome.OverMemory, message, seconds, peak);
            if (!done)
                return new FuzzResult(fuzzCase, FuzzOutcome.Hang, "", seconds, peak);
            return new FuzzResult(fuzzCase, outcome!.Value, message, seconds, peak);
        }

        /// <summary>Clear when the messages name an entry or the zip and no exception in the chain is one that means a bug.</summary>
        public static (FuzzOutcome, string) Classify(Exception ex, string? path = null)
        {
            string text = Describe(ex);
            if (path is not null)
                text = text.Replace(path, "<file>", StringComparison.Ordinal);
            bool bug = Chain(ex).Any(e => s_bugTypes.Contains(e.GetType()));
            bool named = s_names.Any(n => text.Contains(n, StringComparison.OrdinalIgnoreCase));
            return (named && !bug ? FuzzOutcome.ClearError : FuzzOutcome.UnclearError, text);
        }

        public static IEnumerable<Exception> Chain(Exception ex)
        {
            for (Exception? e = ex; e is not null; e = e.InnerException)
                yield return e;
        }

        public static string Describe(Exception ex)
            => string.Join(" | ", Chain(ex).Where(e => e is not System.Reflection.TargetInvocationException).Select(e => $"{e.GetType().Name}: {e.Message}"));

        private static void Dispose(ITransformer model)
        {
            if (model is IEnumerable<ITransformer> chain)
            {
                foreach (var part in chain)
                    (part as IDisposable)?.Dispose();
            }
            (model as IDisposable)?.Dispose();
        }
    }

    /// <summary>
    /// The small trained models the fuzzers mutate, one of each kind the library saves: dense (LeNet-5), weight-sparse
    /// (LeNet-300-100 pruned by magnitude), compact shift attention (a narrow VGG) and channel-pruned (a narrow VGG with
    /// half its multiply-accumulates removed). Each is saved alone (the classifier is the whole zip), with its scores on
    /// fixed images.
    /// </summary>
    internal static class FuzzModels
    {
        public static readonly string[] Kinds = { "dense", "sparse", "shift", "channels", "synaptic" };

        /// <summary>Small images in four learnable classes (each lights one quarter of the image).</summary>
        public static IDataView Images(MLContext ml, int count, ImageShape shape, int seed)
        {
            var random = new Random(seed);
            string[] names = { "ankle", "bag", "coat", "dress" };
            var rows = new List<ImageRow>();
            for (int i = 0; i < count; i++)
            {
                int label = i % names.Length;
                var pixels = new float[shape.Size];
                for (int p = 0; p < pixels.Length; p++)
                    pixels[p] = (float)(random.NextDouble() * 0.3);
                int top = label / 2 * (shape.Height / 2), left = label % 2 * (shape.Width / 2);
                for (int c = 0; c < shape.Channels; c++)
                    for (int y = top; y < top + shape.Height / 2; y++)
                        for (int x = left; x < left + shape.Width / 2; x++)
                            pixels[(c * shape.Height + y) * shape.Width + x] += 0.7f;
                rows.Add(new ImageRow { Label = names[label], Features = pixels });
            }
            SchemaDefinition schema = SchemaDefinition.Create(typeof(ImageRow));
            schema[nameof(ImageRow.Features)].ColumnType = new VectorDataViewType(NumberDataViewType.Single, shape.Channels, shape.Height, shape.Width);
            return ml.Data.LoadFromEnumerable(rows, schema);
        }

        /// <summary>A model of <paramref name="kind"/>: its zip, the column names it was saved with, its scores and its input shape.</summary>
        public static (byte[] Zip, string[] Columns, float[][] Scores, ImageShape Input) Create(string kind)
        {
            var ml = new MLContext(seed: 1);
            int size = kind is "shift" or "channels" or "synaptic" ? 8 : 12;
            var shape = new ImageShape(1, size, size);
            IDataView raw = Images(ml, 64, shape, 0);
            IDataView train = ml.Transforms.Conversion.MapValueToKey("Label").Fit(raw).Transform(raw);
            ImageClassificationTransformer Classifier(ImageClassifierArchitecture architecture, double width = 1) => ml.MulticlassClassification.Trainers
                .ImageClassifier(new ImageClassifierTrainer.Options { Architecture = architecture, Width = width, Epochs = 1, BatchSize = 32 }).Fit(train);
            ITransformer model = kind switch
            {
                "dense" => Classifier(ImageClassifierArchitecture.LeNet5),
                "sparse" => ml.Transforms.PruneMagnitude(Classifier(ImageClassifierArchitecture.LeNet300100), new MagnitudePruner.Options { KeptFraction = 0.1 }).Fit(train),
                "channels" => ml.Transforms.PruneChannels(Classifier(ImageClassifierArchitecture.VggSmall, 0.25), new ChannelPruner.Options { MacsReduction = 2 }).Fit(train),
                "synaptic" => ml.Transforms.PruneSynapticStrength(Classifier(ImageClassifierArchitecture.VggSmall, 0.25),
                    new SynapticStrengthPruner.Options { KeptConnectionFraction = 0.3, SparsityEpochs = 1 }).Fit(train),
                "shift" => ml.Transforms.PruneAttention(new ShiftAttentionTrainer.Options
                {
                    Training = new ImageClassifierTrainer.Options { Architecture = ImageClassifierArchitecture.VggSmall, Width = 0.25, Epochs = 1, BatchSize = 32 },
                    LayerKind = ConvolutionKind.ShiftAttention,
                }).Fit(train),
                _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "Unknown model kind."),
            };
            var classifier = (ImageClassificationTransformer)model;
            string path = Path.Combine(Path.GetTempPath(), "pruning-fuzz-" + Guid.NewGuid().ToString("N") + ".zip");
            try
            {
                ml.Model.Save(classifier, null, path);
                return (File.ReadAllBytes(path),
                    new[] { classifier.FeatureColumnName, classifier.ScoreColumnName, classifier.PredictedLabelColumnName, classifier.LabelColumn.Name },
                    Score(classifier, shape), shape);
            }
            finally
            {
                File.Delete(path);
                classifier.Dispose();
            }
        }

        /// <summary>Scores of 16 fixed images of <paramref name="shape"/>.</summary>
        public static float[][] Score(ITransformer model, ImageShape shape)
            => model.Transform(Images(new MLContext(seed: 1), 16, shape, 7)).GetColumn<float[]>("Score").ToArray();

        /// <summary>The scores of a loaded model, and whether it still takes <paramref name="original"/> images.</summary>
        public static (float[][] Scores, bool SameInput) ScoreLoaded(ITransformer model, ImageShape original)
        {
            var classifier = model as ImageClassificationTransformer ?? ((IEnumerable<ITransformer>)model).OfType<ImageClassificationTransformer>().Single();
            ImageShape input = classifier.Network.Definition.Input;
            return (Score(model, input), input == original);
        }

        /// <summary>One row of <see cref="Images"/>.</summary>
        private sealed class ImageRow
        {
            public string Label { get; set; } = "";

            public float[] Features { get; set; } = Array.Empty<float>();
        }
    }
}
