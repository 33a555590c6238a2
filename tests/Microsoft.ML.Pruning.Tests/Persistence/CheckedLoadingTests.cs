// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text;
using Microsoft.ML;
using Microsoft.ML.Pruning.Fuzzing;
using Microsoft.ML.Pruning.Tests.Pruners;
using Microsoft.VisualStudio.TestTools.UnitTesting;

namespace Microsoft.ML.Pruning.Tests.Persistence
{
    /// <summary><c>mlContext.Model.LoadChecked</c>: the zip, every entry's CRC-32 and ML.NET's header of every Model.key
    /// checked before ML.NET reads them, every refusal naming the entry and field.</summary>
    [TestClass]
    public sealed class CheckedLoadingTests
    {
        private static (byte[] Zip, string[] Columns, float[][] Scores, Microsoft.ML.Pruning.Networks.ImageShape Input)? s_model;

        private static (byte[] Zip, string[] Columns, float[][] Scores, Microsoft.ML.Pruning.Networks.ImageShape Input) Model()
            => s_model ??= FuzzModels.Create("dense");

        private static string LoadChecked(byte[] zip)
        {
            string path = PrunerTestModels.TempZip();
            File.WriteAllBytes(path, zip);
            try
            {
                ITransformer model = new MLContext().Model.LoadChecked(path, out _);
                PrunerTestModels.DisposeAll(model);
                return "";
            }
            catch (FormatException ex)
            {
                return ex.Message;
            }
            finally
            {
                File.Delete(path);
            }
        }

        [TestMethod]
        public void AnIntactFileLoadsFromAPathAndAStreamWithTheOriginalScores()
        {
            var (zip, _, scores, input) = Model();
            string path = PrunerTestModels.TempZip();
            File.WriteAllBytes(path, zip);
            try
            {
                ITransformer fromPath = new MLContext().Model.LoadChecked(path, out DataViewSchema schema);
                PrunerTestModels.DisposeAll(new MLContext().Model.Load(path, out DataViewSchema expected));
                Assert.AreEqual(expected?.Count, schema?.Count);
                using var stream = new MemoryStream(zip);
                ITransformer fromStream = new MLContext().Model.LoadChecked(stream, out _);
                foreach (ITransformer model in new[] { fromPath, fromStream })
                {
                    var loaded = FuzzModels.Score(model, input);
                    Assert.HasCount(scores.Length, loaded);
                    for (int i = 0; i < scores.Length; i++)
                        CollectionAssert.AreEqual(scores[i], loaded[i]);
                    PrunerTestModels.DisposeAll(model);
                }
            }
            finally
            {
                File.Delete(path);
            }
        }

        [TestMethod]
        public void AHeaderFieldOfMLNetIsNamed()
        {
            var (zip, columns, _, _) = Model();
            var fuzzer = new ModelFileFuzzer(zip, columns);
            byte[] edited = fuzzer.WithEntry(ModelFileFuzzer.ModelKey, key =>
            {
                byte[] copy = key.ToArray();
                BitConverter.TryWriteBytes(copy.AsSpan(0x10), 300L); // FpModel
                return copy;
            }, reseal: false);
            string message = LoadChecked(edited);
            StringAssert.Contains(message, "Model.key': ML.NET's header field FpModel is 300; it must be 256");
        }

        [TestMethod]
        public void AnUnknownLoaderSignatureNamesTheComponentsEntry()
        {
            var (zip, columns, _, _) = Model();
            var fuzzer = new ModelFileFuzzer(zip, columns);
            byte[] edited = fuzzer.WithEntry(ModelFileFuzzer.ModelKey, key =>
            {
                byte[] copy = key.ToArray();
                copy.AsSpan(0x50, 24).Clear();
                Encoding.ASCII.GetBytes("NO SUCH LOADER").CopyTo(copy, 0x50);
                return copy;
            }, reseal: false);
            string message = LoadChecked(edited);
            StringAssert.Matches(message, new System.Text.RegularExpressions.Regex("zip entry '[^']*Model.key': ML.NET refused this component"));
        }

        [TestMethod]
        public void NotAZipAndAnEmptyFileAreNamed()
        {
            StringAssert.Contains(LoadChecked(Encoding.ASCII.GetBytes("this is not a model")), "not a readable zip archive");
            StringAssert.Contains(LoadChecked(Array.Empty<byte>()), "not a readable zip archive");
            Assert.ThrowsExactly<FileNotFoundException>(() => new MLContext().Model.LoadChecked("/nonexistent/model.zip", out _));
        }

        [TestMethod]
        public void ACorruptedCompressedEntryIsCaughtByItsCrc()
        {
            // Weights.bin stored without compression: a flipped byte decompresses fine and only the CRC-32 tells.
            var (zip, _, _, _) = Model();
            var entries = ModelFileFuzzer.ReadEntries(zip);
            string weights = entries.Keys.Single(k => k.EndsWith(ModelFileFuzzer.WeightsBin, StringComparison.Ordinal));
            using var buffer = new MemoryStream();
            using (var archive = new System.IO.Compression.ZipArchive(buffer, System.IO.Compression.ZipArchiveMode.Create, leaveOpen: true))
            {
                foreach (var (name, content) in entries)
                {
                    var entry = archive.CreateEntry(name, System.IO.Compression.CompressionLevel.NoCompression);
                    using Stream s = entry.Open();
                    s.Write(content);
                }
            }
            byte[] stored = buffer.ToArray();
            byte[] original = entries[weights];
            int at = IndexOf(stored, original) + original.Length / 2;
            stored[at] ^= 0x10;
            string message = LoadChecked(stored);
            StringAssert.Contains(message, $"zip entry '{weights}': its CRC-32 is");
        }

        [TestMethod]
        public void EveryRefusalOfFlipsInMLNetsHeadersAndTheZipNamesItsEntry()
        {
            var (zip, columns, scores, input) = Model();
            var fuzzer = new ModelFileFuzzer(zip, columns);
            var random = new Random(7);
            var (_, _, header) = fuzzer.MLNetHeaderClass();
            var zipFlip = fuzzer.Classes().Single(c => c.Class == "zip-flip").Make;
            var results = new List<FuzzResult>();
            for (int i = 0; i < 40; i++)
            {
                foreach (var (cls, make) in new[] { ("ML.NET header", header), ("zip-flip", zipFlip) })
                {
                    var (description, mutated) = make(random);
                    results.Add(FuzzRunner.Run(new FuzzCase("dense", cls, description, mutated, false), m => FuzzModels.ScoreLoaded(m, input), scores,
                        TimeSpan.FromSeconds(20), 1L << 30, checkedLoad: true));
                }
            }
            var bad = results.Where(r => r.Outcome is not (FuzzOutcome.ClearError or FuzzOutcome.LoadedIdentical)).ToList();
            Assert.IsEmpty(bad, string.Join("\n", bad.Select(r => $"{r.Case.Class} {r.Case.Description}: {r.Outcome} {r.Message}")));
            Assert.IsTrue(results.Count(r => r.Outcome == FuzzOutcome.ClearError) >= 40);
            var unnamed = results.Where(r => r.Outcome == FuzzOutcome.ClearError
                && !(r.Message.Contains("zip entry '", StringComparison.Ordinal) || r.Message.Contains("not a readable zip archive", StringComparison.Ordinal))).ToList();
            Assert.IsEmpty(unnamed, string.Join("\n", unnamed.Select(r => $"{r.Case.Description}: {r.Message}")));
        }

        private static int IndexOf(byte[] haystack, byte[] needle)
        {
            for (int i = 0; i + needle.Length <= haystack.Length; i++)
                if (haystack.AsSpan(i, needle.Length).SequenceEqual(needle))
                    return i;
            throw new InvalidOperationException("entry not found stored");
        }
    }
}
