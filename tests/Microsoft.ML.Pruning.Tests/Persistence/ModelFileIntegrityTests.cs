// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Linq;
using System.Text;
using System.Text.RegularExpressions;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Pruning.Fuzzing;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Pruners;
using Microsoft.ML.Pruning.Pruners.Magnitude;
using Microsoft.ML.Pruning.Pruners.ShiftAttention;
using Microsoft.ML.Pruning.Tests.Pruners;
using Microsoft.ML.Pruning.Training;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using TorchSharp;

namespace Microsoft.ML.Pruning.Tests.Persistence
{
    /// <summary>Damaged and hostile model files: bounded loading, checksums, validation of everything a file declares.</summary>
    [TestClass]
    public sealed class ModelFileIntegrityTests
    {
        private static readonly Dictionary<string, (byte[] Zip, string[] Columns, float[][] Scores, ImageShape Input)> s_models = new();
        private static readonly object s_gate = new();

        /// <summary>A small trained model of each kind (<see cref="FuzzModels"/>), made once per test run.</summary>
        private static (byte[] Zip, string[] Columns, float[][] Scores, ImageShape Input) Model(string kind)
        {
            lock (s_gate)
            {
                if (!s_models.TryGetValue(kind, out var model))
                    s_models[kind] = model = FuzzModels.Create(kind);
                return model;
            }
        }

        private static float[][] Score(ITransformer model, ImageShape shape) => FuzzModels.Score(model, shape);

        private static string Load(byte[] zip)
        {
            string path = PrunerTestModels.TempZip();
            File.WriteAllBytes(path, zip);
            try
            {
                ITransformer model = new MLContext().Model.Load(path, out _);
                PrunerTestModels.DisposeAll(model);
                return "";
            }
            catch (Exception ex)
            {
                return FuzzRunner.Describe(ex);
            }
            finally
            {
                File.Delete(path);
            }
        }

        private static string EditJson(string kind, Func<string, string> edit)
        {
            var (zip, columns, _, _) = Model(kind);
            var fuzzer = new ModelFileFuzzer(zip, columns);
            string json = Encoding.UTF8.GetString(fuzzer.Entry(ModelFileFuzzer.NetworkJson));
            string edited = edit(json);
            Assert.AreNotEqual(json, edited, "the edit applies");
            return Load(fuzzer.WithEntry(ModelFileFuzzer.NetworkJson, _ => Encoding.UTF8.GetBytes(edited), reseal: true));
        }

        private static string ReplaceFirst(string text, string pattern, string replacement) => new Regex(pattern).Replace(text, replacement, 1);

        [TestMethod]
        public void AModelLoadsBackWithIdenticalScores()
        {
            foreach (string kind in FuzzModels.Kinds)
            {
                var (zip, _, scores, input) = Model(kind);
                string path = PrunerTestModels.TempZip();
                File.WriteAllBytes(path, zip);
                ITransformer loaded = new MLContext().Model.Load(path, out _);
                File.Delete(path);
                float[][] after = Score(loaded, input);
                for (int i = 0; i < scores.Length; i++)
                    CollectionAssert.AreEqual(scores[i], after[i], $"{kind}, row {i}");
                PrunerTestModels.DisposeAll(loaded);
            }
        }

        [TestMethod]
        public void DamagedEntriesAreCaughtByTheirChecksums()
        {
            var (zip, columns, _, _) = Model("dense");
            var fuzzer = new ModelFileFuzzer(zip, columns);
            string weights = Load(fuzzer.WithEntry(ModelFileFuzzer.WeightsBin, b => { b = b.ToArray(); b[^7] ^= 4; return b; }, reseal: false));
            StringAssert.Contains(weights, "Weights.bin: its SHA-256 does not match the one Model.key records: the file is damaged.");
            string json = Load(fuzzer.WithEntry(ModelFileFuzzer.NetworkJson, b => { b = b.ToArray(); b[40] ^= 1; return b; }, reseal: false));
            StringAssert.Contains(json, "Network.json: its SHA-256 does not match");
            byte[] key = fuzzer.Entry(ModelFileFuzzer.ModelKey);
            var (start, end) = fuzzer.Payload(key);
            for (int at = start + 16; at < end; at += 7)
            {
                string model = Load(fuzzer.WithEntry(ModelFileFuzzer.ModelKey, b => { b = b.ToArray(); b[at] ^= 0x10; return b; }, reseal: false));
                StringAssert.Contains(model, "TransformerChain/Model.key: field '", $"byte {at}");
            }
        }

        [TestMethod]
        public void EveryFieldOfTheDefinitionIsValidatedAtLoad()
        {
            var cases = new (string Kind, Func<string, string> Edit, string Expected)[]
            {
                ("dense", j => ReplaceFirst(j, "\"Stride\":1", "\"Stride\":0"), "Network.json: The stored network definition is inconsistent: Layer 'conv1' (Conv2dLayer) has Stride 0; it must be between 1 and 16384."),
                ("dense", j => ReplaceFirst(j, "\"Padding\":2", "\"Padding\":2147483647"), "Layer 'conv1' (Conv2dLayer) has Padding 2147483647; it must be between 0 and 4."),
                ("dense", j => ReplaceFirst(j, "(\"kind\":\"maxpool2d\",\"KernelSize\":)2", "${1}0"), "Layer 'pool1' (MaxPool2dLayer) has KernelSize 0; it must be between 1 and 16384."),
                ("dense", j => ReplaceFirst(j, "\"Std\":\\[[^\\]]*\\]", "\"Std\":[0]"), "Layer 'normalize' (NormalizeLayer) has Std[0] = 0; it must be finite and greater than 0."),
                ("dense", j => ReplaceFirst(j, "\"Std\":\\[[^\\]]*\\]", "\"Std\":[]"), "Layer 'normalize' (NormalizeLayer) has 1 Mean values but 0 Std values."),
                ("dense", j => ReplaceFirst(j, "\"Std\":\\[[^\\]]*\\]", "\"Std\":null"), "Layer 'normalize' (NormalizeLayer) lacks field 'Std'."),
                ("dense", j => ReplaceFirst(j, "\"Width\":12", "\"Width\":1000000000"), "Field 'Input.Width' is 1000000000; it must be between 1 and 16384."),
                ("dense", j => ReplaceFirst(j, "\"Width\":12", "\"Width\":1e9"), "Path: $.Input.Width"),
                ("dense", j => ReplaceFirst(j, "\"OutChannels\":6", "\"OutChannels\":0"), "Layer 'conv1' (Conv2dLayer) has OutChannels 0; it must be between 1 and 65536."),
                ("dense", j => j.Replace("\"OutFeatures\":120", "\"OutFeatures\":3000000", StringComparison.Ordinal).Replace("\"InFeatures\":120", "\"InFeatures\":3000000", StringComparison.Ordinal),
                    "Network.json: The stored network definition is inconsistent: The layers declare 303002996 stored values; at most 134217728 are allowed."),
                ("dense", j => j.Replace("\"OutFeatures\":120", "\"OutFeatures\":1000000", StringComparison.Ordinal).Replace("\"InFeatures\":120", "\"InFeatures\":1000000", StringComparison.Ordinal),
                    "Weights.bin: Stored 'fc1.weight' has shape [120,16], the network expects [1000000,16]."),
                ("dense", j => j + new string(' ', 5 << 20), "Network.json: its stored length is 5"),
                ("dense", j => Nest(j, 9), "Network.json: The stored network definition is inconsistent: 'Layers/r8.Body/r7.Body/r6.Body/r5.Body/r4.Body/r3.Body/r2.Body/r1.Body/r0.Body' nests residual blocks 9 deep; at most 8 levels are allowed."),
                ("shift", j => ReplaceFirst(j, "(\"kind\":\"shiftpointwise2d\",\"Shared\":false,\"InChannels\":\\d+,\"OutChannels\":\\d+,\"KernelSize\":3,\"Stride\":1,\"Padding\":)1", "${1}3"),
                    "(ShiftPointwiseConv2dLayer) has Padding 3; it must be between 0 and 2."),
            };
            foreach (var (kind, edit, expected) in cases)
                StringAssert.Contains(EditJson(kind, edit), expected);
        }

        private static string Nest(string json, int depth)
        {
            int start = json.IndexOf("\"Layers\":", StringComparison.Ordinal) + "\"Layers\":".Length;
            string layers = json[start..json.LastIndexOf('}')];
            for (int i = 0; i < depth; i++)
                layers = $"[{{\"kind\":\"residual\",\"Body\":{layers},\"Shortcut\":[],\"Name\":\"r{i}\"}}]";
            return json[..start] + layers + "}";
        }

        [TestMethod]
        public void StoredTensorsMustBeFiniteExactAndWithinTheirKernel()
        {
            var (zip, columns, _, _) = Model("dense");
            var fuzzer = new ModelFileFuzzer(zip, columns);
            byte[] weights = fuzzer.Entry(ModelFileFuzzer.WeightsBin);
            // The last tensor is fc3.bias: [4] float32 dense, its values the last 16 bytes.
            string nan = Load(fuzzer.WithEntry(ModelFileFuzzer.WeightsBin, b => { b = b.ToArray(); BitConverter.TryWriteBytes(b.AsSpan(b.Length - 8), float.NaN); return b; }, reseal: true));
            StringAssert.Contains(nan, "Weights.bin: Tensor 'fc3.bias' has value NaN at index 2; stored values must be finite, at most 1E+10 in magnitude.");
            string huge = Load(fuzzer.WithEntry(ModelFileFuzzer.WeightsBin, b => { b = b.ToArray(); BitConverter.TryWriteBytes(b.AsSpan(b.Length - 4), 1e38f); return b; }, reseal: true));
            StringAssert.Contains(huge, "Tensor 'fc3.bias' has value 1E+38 at index 3");
            string trailing = Load(fuzzer.WithEntry(ModelFileFuzzer.WeightsBin, b => b.Concat(new byte[] { 0 }).ToArray(), reseal: true));
            StringAssert.Contains(trailing, "Weights.bin: The weights stream has bytes after its last tensor ('fc3.bias').");
            // float32 -> uint8: the type byte sits before rank (4), one dimension (8) and the encoding (1), 16 bytes of values.
            string retyped = Load(fuzzer.WithEntry(ModelFileFuzzer.WeightsBin, b => { b = b.ToArray(); b[b.Length - 16 - 1 - 8 - 4 - 1] = 2; return b; }, reseal: true));
            StringAssert.Contains(retyped, "Weights.bin: Stored 'fc3.bias' has element type uint8, the network expects float32.");

            var (shiftZip, shiftColumns, _, _) = Model("shift");
            var shift = new ModelFileFuzzer(shiftZip, shiftColumns);
            string index = Load(shift.WithEntry(ModelFileFuzzer.WeightsBin, b => SetFirstShift(b, 9), reseal: true));
            StringAssert.Contains(index, "Weights.bin: Tensor 'conv2.shift' has value 9 at index 0; it must be below 9.");
            Assert.AreEqual("", Load(shift.WithEntry(ModelFileFuzzer.WeightsBin, b => SetFirstShift(b, 8), reseal: true)), "shift index 8 is the last tap of 3x3");
        }

        /// <summary>Sets the first shift index of conv2 (stored dense, uint8, after its name, type, rank, shape and encoding).</summary>
        private static byte[] SetFirstShift(byte[] weights, byte value)
        {
            byte[] copy = weights.ToArray();
            byte[] name = Encoding.UTF8.GetBytes("conv2.shift");
            int at = copy.AsSpan().IndexOf(name) + name.Length;
            Assert.AreEqual(2, copy[at], "uint8");
            int rank = BitConverter.ToInt32(copy, at + 1);
            copy[at + 1 + 4 + 8 * rank + 1] = value;
            return copy;
        }

        [TestMethod]
        public void LabelValuesAreReadByTheLibrarysBoundedReader()
        {
            var (zip, columns, _, _) = Model("dense");
            var fuzzer = new ModelFileFuzzer(zip, columns);
            // Re-seal after setting the count of the label values (byte 0 is the kind, 1-4 the count) to a million.
            byte[] model = fuzzer.Entry(ModelFileFuzzer.ModelKey);
            string message = LoadWithLabelCount(fuzzer, model, 1_000_000);
            StringAssert.Contains(message, "Model.key: field 'label values' declares 1000000 values in ");
            StringAssert.Contains(LoadWithLabelCount(fuzzer, model, 3), "TransformerChain/Model.key: field 'label values' has 9 bytes after its last value.");
        }

        private static string LoadWithLabelCount(ModelFileFuzzer fuzzer, byte[] model, int count)
        {
            var watch = Stopwatch.StartNew();
            string message = Load(fuzzer.WithLabelEdit(b =>
            {
                b = b.ToArray();
                byte[] text = Encoding.UTF8.GetBytes("ankle");
                int first = b.AsSpan().IndexOf(text);
                // kind (1), count (4), length of the first name (4), then its text.
                int countAt = first - 4 - 4;
                Assert.AreEqual(4, BitConverter.ToInt32(b, countAt));
                BitConverter.TryWriteBytes(b.AsSpan(countAt), count);
                return b;
            }));
            Assert.IsLessThan(10.0, watch.Elapsed.TotalSeconds);
            return message;
        }

        [TestMethod]
        public void AnEmptyTrainingSetWithKnownClassesIsReportedAsEmpty()
        {
            var ml = new MLContext(seed: 1);
            IDataView empty = SyntheticImages.Load(ml, Array.Empty<ImageRow>());
            IDataView keyed = new MLContext().Transforms.Conversion.MapValueToKey("Label").Fit(SyntheticImages.Load(ml, 8)).Transform(empty);
            var trainer = ml.MulticlassClassification.Trainers.ImageClassifier(new ImageClassifierTrainer.Options { Architecture = ImageClassifierArchitecture.LeNet300100, Epochs = 1 });
            var ex = Assert.ThrowsExactly<InvalidOperationException>(() => trainer.Fit(keyed));
            StringAssert.Contains(ex.Message, "The training data has no rows.");
        }

        [TestMethod]
        public void FuzzedFilesFailClearlyOrScoreAsTheOriginal()
        {
            var watch = Stopwatch.StartNew();
            var results = new List<FuzzResult>();
            string[] kinds = FuzzModels.Kinds;
            for (int k = 0; k < kinds.Length; k++)
            {
                string kind = kinds[k];
                var (zip, columns, scores, input) = Model(kind);
                var fuzzer = new ModelFileFuzzer(zip, columns);
                foreach (FuzzCase c in fuzzer.Cases(kind, perClass: 5, seed: 20261205 + k))
                    results.Add(FuzzRunner.Run(c, m => FuzzModels.ScoreLoaded(m, input), scores, TimeSpan.FromSeconds(20), 1L << 30));
            }
            string Report(IEnumerable<FuzzResult> rs) => string.Join("\n", rs.Take(10).Select(r => $"{r.Case.Model} {r.Case.Class} {r.Case.Description}: {r.Outcome} {r.Message}"));
            var bad = results.Where(r => r.Outcome is FuzzOutcome.Hang or FuzzOutcome.OverMemory or FuzzOutcome.NonFiniteScores
                or FuzzOutcome.FailsAtFirstPrediction or FuzzOutcome.UnclearError || (r.Outcome == FuzzOutcome.LoadedDifferent && !r.Case.Resealed)).ToList();
            Assert.IsEmpty(bad, Report(bad));
            Assert.HasCount(FuzzModels.Kinds.Length * 11 * 5, results);
            // Every class of mutation is refused at least once, and the unchanged-content ones do not all load.
            foreach (var group in results.GroupBy(r => r.Case.Class))
                Assert.IsTrue(group.Any(r => r.Outcome == FuzzOutcome.ClearError), $"{group.Key}: {Report(group)}");
            Assert.IsTrue(results.All(r => r.Seconds < 20 && r.PeakBytes < 1L << 30));
            // Past the zip's own structure, a refusal names the classifier's entry.
            var unnamed = results.Where(r => r.Outcome == FuzzOutcome.ClearError && !r.Case.Class.StartsWith("zip-", StringComparison.Ordinal)
                && !new[] { "Model.key", "Network.json", "Weights.bin" }.Any(e => r.Message.Contains("TransformerChain/" + e, StringComparison.Ordinal))).ToList();
            Assert.IsEmpty(unnamed, Report(unnamed));
            Assert.IsLessThan(120.0, watch.Elapsed.TotalSeconds);
        }
    }
}
