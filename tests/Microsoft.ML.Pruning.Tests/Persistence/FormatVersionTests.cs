// Licensed under the MIT license.

using System;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Pruning.Fuzzing;
using Microsoft.ML.Pruning.Tests.Pruners;
using Microsoft.VisualStudio.TestTools.UnitTesting;

namespace Microsoft.ML.Pruning.Tests.Persistence
{
    /// <summary>Model files of the first format (0x00010001: no checksums, label values by ML.NET's BinarySaver) still load.</summary>
    [TestClass]
    public sealed class FormatVersionTests
    {
        // A classifier saved by the library before the format had checksums: normalize (mean 0.25, std 0.5), flatten, and a
        // 16 -> 3 linear layer with weight[o, i] = ((16 o + i) % 7 - 3) / 8 and bias (0.5, -0.25, 0); classes ankle, bag, coat.
        private const string Version1Zip =
            "UEsDBBQAAAAIAMaghV2l77AQLwAAAC8AAAAYAAAAVHJhaW5pbmdJbmZvL1ZlcnNpb24udHh0BcHBDQAgCASwv6uYmDsBlXGUwP4j2NrAYL9aW5CBcGLFDM/yZF1RkLKVtHp+2gdQSwMEFAAAAAgAxqCFXbYYq2zDAAAALgEAAB0AAABUcmFuc2Zvcm1lckNoYWluL05ldHdvcmsuanNvbk2PPU/EQAxE/8vUFiJcuGI7OIRA4qO4guKUwkoMsdj40K5THFH+O9oILnRj62k0b8JNant1aX1MggBXO4HwaF+jI0zY9WwmMSNUhAfRj94RasKbdt4vaa/fglBtZ8Iucs6SETaEJz5JygiHCZ9qHQLsmAaOhSY8CxvC4fLi6roh7L1bjpJfeCg7Vnimc8N7ZHcxnKm/xz8mqgmnReFeuFiV7VvC6+jrY0O4Vc4InkZZ61rMza/8nQ5iWY9WHCqqqW7mH1BLAwQUAAAACADGoIVdkl3c9lQAAAD1AAAAHAAAAFRyYW5zZm9ybWVyQ2hhaW4vV2VpZ2h0cy5iaW4LCPILZ2RgYGBiYGDgTEvWK0/NTM8oAXOZGSBAAEozfv/9t27/fQaGA/sYGBr2MTAwgLAdA0ODHQPDARAeNOLsacl6SZmJxQwgr8H8wQhi2IOUAgBQSwMEFAAAAAgAxqCFXYFiNJ0MAQAAVgIAABoAAABUcmFuc2Zvcm1lckNoYWluL01vZGVsLmtleb2QzU4CMRSFPzBGFi6MS1c8gCG6cUdiHDAhdmACSNgW7JAJtWM60wRfxGfx7ca0U4grl9723nNO7l/TVJDORmPRpYN3f72tW2AddT/qQ9SPUWfz1+l4kogO7cmsM2ryLncq0bKqirxQlj9s2m1xFfE7zv/i/8yv9OvPgIvVk8tzZa97S3WoFx/ShLRPHbFpmobIz4EecOldmr1WG7nblrK+irNvIj5EPP7bMwpJjcOiqFiwpQw8C/GNgi11YALJBoX+xdKQt5RUlOTUDEgRDEK/w1Bg2HFLnxUKS0VBiWHIPQPuTu4rEhz69JohBoWjxiLRoSLDsUGHrS8oPllSskeFiSb0a8R4NEsR6Q9QSwECFAMUAAAACADGoIVdpe+wEC8AAAAvAAAAGAAAAAAAAAAAAAAApIEAAAAAVHJhaW5pbmdJbmZvL1ZlcnNpb24udHh0UEsBAhQDFAAAAAgAxqCFXbYYq2zDAAAALgEAAB0AAAAAAAAAAAAAAKSBZQAAAFRyYW5zZm9ybWVyQ2hhaW4vTmV0d29yay5qc29uUEsBAhQDFAAAAAgAxqCFXZJd3PZUAAAA9QAAABwAAAAAAAAAAAAAAKSBYwEAAFRyYW5zZm9ybWVyQ2hhaW4vV2VpZ2h0cy5iaW5QSwECFAMUAAAACADGoIVdgWI0nQwBAABWAgAAGgAAAAAAAAAAAAAApIHxAQAAVHJhbnNmb3JtZXJDaGFpbi9Nb2RlbC5rZXlQSwUGAAAAAAQABAAjAQAANQMAAAAA";

        [TestMethod]
        public void AFileOfTheFirstFormatLoadsAndScoresAsItsWeightsSay()
        {
            string path = PrunerTestModels.TempZip();
            File.WriteAllBytes(path, Convert.FromBase64String(Version1Zip));
            var ml = new MLContext(seed: 1);
            ITransformer model = ml.Model.Load(path, out _);
            File.Delete(path);
            try
            {
                var classifier = PrunerTestModels.Classifier(model);
                CollectionAssert.AreEqual(new[] { "ankle", "bag", "coat" }, classifier.ClassNames.ToArray());
                var images = Enumerable.Range(0, 3).Select(n => new ImageRow { Label = "ankle", Features = Enumerable.Range(0, 16).Select(p => (p * 5 + n * 3) % 11 / 10f).ToArray() }).ToArray();
                float[][] scores = model.Transform(SyntheticImages.Load(ml, images, 1, 4, 4)).GetColumn<float[]>("Score").ToArray();
                for (int n = 0; n < images.Length; n++)
                {
                    double[] logits = new double[3];
                    double[] bias = { 0.5, -0.25, 0 };
                    for (int o = 0; o < 3; o++)
                    {
                        logits[o] = bias[o];
                        for (int i = 0; i < 16; i++)
                            logits[o] += ((16 * o + i) % 7 - 3) * 0.125 * ((images[n].Features[i] - 0.25) / 0.5);
                    }
                    double max = logits.Max(), sum = logits.Sum(l => Math.Exp(l - max));
                    for (int o = 0; o < 3; o++)
                        Assert.AreEqual(Math.Exp(logits[o] - max) / sum, scores[n][o], 1e-5, $"image {n}, class {o}");
                }

                // Saved again, it is written in the current format and loads with the same scores.
                string again = PrunerTestModels.TempZip();
                ml.Model.Save(model, null, again);
                ITransformer reloaded = new MLContext().Model.Load(again, out _);
                File.Delete(again);
                float[][] rescored = reloaded.Transform(SyntheticImages.Load(ml, images, 1, 4, 4)).GetColumn<float[]>("Score").ToArray();
                for (int n = 0; n < images.Length; n++)
                    CollectionAssert.AreEqual(scores[n], rescored[n]);
                PrunerTestModels.DisposeAll(reloaded);
            }
            finally
            {
                PrunerTestModels.DisposeAll(model);
            }
        }

        [TestMethod]
        public void HostileHeadersOfTheFirstFormatFailClearlyWithoutHanging()
        {
            byte[] zip = Convert.FromBase64String(Version1Zip);
            var entries = ModelFileFuzzer.ReadEntries(zip);
            string key = entries.Keys.Single(k => k.EndsWith("Model.key", StringComparison.Ordinal));
            byte[] model = entries[key];
            var outcomes = new System.Collections.Generic.List<FuzzResult>();
            // Every int32 after ML.NET's header (the column name ids, the label values, ML.NET's string table) set to values
            // that once made the label values' codec spin or allocate.
            foreach (int value in new[] { 1_000_000, int.MaxValue, -1 })
            {
                for (int at = 0x100; at + 4 <= model.Length; at++)
                {
                    byte[] edited = model.ToArray();
                    BitConverter.TryWriteBytes(edited.AsSpan(at, 4), value);
                    var copy = new System.Collections.Generic.Dictionary<string, byte[]>(entries) { [key] = edited };
                    var fuzzCase = new FuzzCase("v1", "header-int", $"0x{at:X} = {value}", ModelFileFuzzer.WriteEntries(copy), false);
                    outcomes.Add(FuzzRunner.Run(fuzzCase, m => (Array.Empty<float[]>(), false), Array.Empty<float[]>(), TimeSpan.FromSeconds(10), 1L << 30));
                }
            }
            // The label values (after the four column name ids, up to ML.NET's string table) are the library's to read.
            int labelStart = 0x100 + 16, labelEnd = model.AsSpan().IndexOf("anklebagcoat"u8) + 12;
            var bad = outcomes.Where(r => r.Outcome is FuzzOutcome.Hang or FuzzOutcome.OverMemory
                || (r.Outcome == FuzzOutcome.UnclearError && Offset(r) >= labelStart && Offset(r) + 4 <= labelEnd)).ToList();
            Assert.IsEmpty(bad, string.Join("\n", bad.Take(10).Select(r => $"{r.Case.Description}: {r.Outcome} {r.Message}")));
            Assert.IsTrue(outcomes.Any(r => r.Outcome == FuzzOutcome.ClearError));
        }

        private static int Offset(FuzzResult result) => Convert.ToInt32(result.Case.Description[2..result.Case.Description.IndexOf(' ', StringComparison.Ordinal)], 16);
    }
}
