// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Pruning.Data;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Pruners;
using Microsoft.ML.Pruning.Pruners.ShiftAttention;
using Microsoft.ML.Pruning.Runtime;
using Microsoft.ML.Pruning.Runtime.Kernels;
using Microsoft.ML.Pruning.Training;
using Microsoft.ML.Transforms;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Benchmarks
{
    /// <summary>
    /// Scenario <c>runtime</c>: the compact runtime against the dense network scored by libtorch, whole network and layer
    /// by layer, batch-1 latency and batch-256 throughput, timed interleaved in one process, with the MACs ratio next to
    /// each speedup. The small VGG is compared with its shift attention (per pair and shared) and fixed-shift forms,
    /// the same VGG channel-pruned by L1 norm to 2× and 4× fewer MACs (whole networks only: their
    /// layers have other shapes than the dense ones), LeNet-300-100 with its 7%-kept L-OBS and magnitude forms.
    /// </summary>
    /// <remarks>
    /// Speed does not depend on how well a model is trained, only on its shape and on which weights are zero, so the
    /// models are trained briefly (the VGGs one epoch on <c>--train-rows</c> images, default 10,000; LeNet-300-100 the
    /// <c>train</c> recipe) and pruned without retraining; their accuracy is printed to show they are real models, and the
    /// <c>sal</c> and <c>lobs</c> scenarios measure accuracy properly. Every model is also exported with
    /// <c>mlContext.Model.ConvertToOnnx</c> and scored by ONNX Runtime in the same interleaved timing (rows with
    /// <c>backend</c> <c>onnxruntime</c>, speedups against the dense model on ONNX Runtime). <c>fc784x300</c> times the sparse fully connected
    /// kernel alone against the dense product over a range of sparsities. Options: <c>--quick</c>, <c>--models
    /// vgg-small,lenet300,fc784x300</c>, <c>--train-rows N</c>.
    /// </remarks>
    internal static class RuntimeScenario
    {
        private const string Dense = "dense", DenseRuntime = "dense-runtime", OnnxRuntimeBackend = "onnxruntime";

        // A fully connected layer the size of LeNet-300-100's first, pruned to a range of sparsities.
        private const string SparseLinearModel = "fc784x300";
        private const int SweepInputs = 784, SweepOutputs = 300;

        /// <summary>A network to time: the dense reference scores with libtorch, every other one with the compact runtime.</summary>
        private sealed record Candidate(string Method, ClassifierNetwork Network, InferenceBackend Backend, long Macs, double? Accuracy,
            MLContext Context, ITransformer Model, IDataView Test)
        {
            /// <summary>Whether the network has the dense one's layer shapes, so that its steps can be timed against the dense layers.</summary>
            public bool DenseShapes { get; init; } = true;

            /// <summary>The channel criterion and the MACs reduction asked for, for channel-pruned networks.</summary>
            public (string Criterion, double Target)? Channels { get; init; }
        }

        /// <summary>The targets the runtime is built to meet, checked and printed at the end.</summary>
        private static readonly (string Model, string Method, double B1, double B256)[] s_targets =
        {
            ("vgg-small", "shift-attention", 2, 4),
            ("lenet300", "lobs-7%", 3, 1),
            ("lenet300", "magnitude-7%", 3, 1),
        };

        public static int Run(string[] args)
        {
            bool quick = args.Contains("--quick");
            string[] models = BenchArgs.Option(args, "--models")?.Split(',') ?? new[] { "vgg-small", "lenet300", SparseLinearModel };
            int trainRows = BenchArgs.Option(args, "--train-rows", quick ? 2000 : 10000);
            foreach (string model in models)
            {
                if (model is not ("vgg-small" or "lenet300" or SparseLinearModel))
                    throw new ArgumentException($"runtime compares vgg-small, lenet300 and {SparseLinearModel}; got '{model}'.");
            }

            var results = new List<BenchRow>();
            foreach (string model in models)
            {
                if (model == SparseLinearModel)
                {
                    results.AddRange(SparseLinearSweep(quick));
                    continue;
                }
                var ml = new MLContext(seed: 1);
                IDataView train = ml.Data.Cache(FashionMnist.LoadTrain(ml, model == "lenet300" && !quick ? 60000 : trainRows));
                IDataView test = ml.Data.Cache(FashionMnist.LoadTest(ml, quick ? 1000 : 10000));
                List<ITransformer> owned = new();
                try
                {
                    List<Candidate> candidates = model == "vgg-small" ? Vgg(ml, train, test, quick, owned) : LeNet300(ml, train, test, quick, owned);
                    results.AddRange(Compare(model, candidates, quick));
                }
                finally
                {
                    foreach (ITransformer transformer in owned)
                        ModelCache.DisposeAll(transformer);
                }
            }

            Table.Print(
                new[] { "model", "method", "backend", "layer", "MACs", "MACs ratio", "b1 ms", "dense b1 ms", "b1 speedup", "b256 img/s", "dense b256 img/s", "b256 speedup" },
                results.Select(r => (IReadOnlyList<string>)new[]
                {
                    r.Model, r.Method, r.Backend ?? "", r.Layer ?? "(network)", Table.Format(r.Macs), Table.Format(r.MacsRatio, "0.00"),
                    Table.Format(r.LatencyB1Ms, "0.0000"), Table.Format(r.ReferenceLatencyB1Ms, "0.0000"), Table.Format(r.SpeedupB1, "0.00"),
                    Table.Format(r.ThroughputB256, "0"), Table.Format(r.ReferenceThroughputB256, "0"), Table.Format(r.SpeedupB256, "0.00"),
                }));

            Console.WriteLine();
            Table.Print(
                new[] { "model", "method", "Evaluate img/s", "bare b256 img/s", "Evaluate / bare" },
                results.Where(r => r.Layer is null && r.Backend != OnnxRuntimeBackend).Select(r => (IReadOnlyList<string>)new[]
                {
                    r.Model, r.Method, Table.Format(r.EvaluateImagesPerS, "0"), Table.Format(r.BareImagesPerS, "0"), Table.Format(r.EvaluateRatio, "0.00"),
                }));

            Console.WriteLine();
            Console.WriteLine("ONNX Runtime (the exported model, CPU, all graph optimizations) against the compact runtime, same run (speedup: compact over ONNX Runtime):");
            Table.Print(
                new[] { "model", "method", "ONNX bytes", "ONNX accuracy", "ORT b1 ms", "compact b1 ms", "compact speedup b1", "ORT b256 img/s", "compact b256 img/s", "compact speedup b256" },
                results.Where(r => r.Backend == OnnxRuntimeBackend).Select(r =>
                {
                    string compactMethod = r.Method == Dense ? DenseRuntime : r.Method;
                    BenchRow? compact = results.FirstOrDefault(c => c.Model == r.Model && c.Method == compactMethod && c.Layer is null && c.Backend == "compact");
                    return (IReadOnlyList<string>)new[]
                    {
                        r.Model, r.Method, Table.Format(r.OnnxBytes), Table.Format(r.Accuracy, "0.0000"),
                        Table.Format(r.LatencyB1Ms, "0.0000"), Table.Format(compact?.LatencyB1Ms, "0.0000"), Table.Format(r.LatencyB1Ms / compact?.LatencyB1Ms, "0.00"),
                        Table.Format(r.ThroughputB256, "0"), Table.Format(compact?.ThroughputB256, "0"), Table.Format(compact?.ThroughputB256 / r.ThroughputB256, "0.00"),
                    };
                }));

            Console.WriteLine();
            Console.WriteLine("targets (whole network, vs the dense network on libtorch):");
            foreach (var (model, method, b1, b256) in s_targets)
            {
                BenchRow? row = results.FirstOrDefault(r => r.Model == model && r.Method == method && r.Layer is null && r.Backend != OnnxRuntimeBackend);
                if (row is null)
                    continue;
                Console.WriteLine(FormattableString.Invariant(
                    $"  {model} {method}: batch 1 {row.SpeedupB1:0.00}x (target {b1}x, {(row.SpeedupB1 >= b1 ? "met" : "missed")}), batch 256 {row.SpeedupB256:0.00}x (target {b256}x, {(row.SpeedupB256 >= b256 ? "met" : "missed")})"));
            }
            Console.WriteLine("wrote " + BenchOutput.Write("runtime", results));
            return 0;
        }

        private static List<Candidate> Vgg(MLContext ml, IDataView train, IDataView test, bool quick, List<ITransformer> owned)
        {
            ImageClassifierTrainer.Options Recipe(ConvolutionKind kind)
            {
                ImageClassifierTrainer.Options recipe = TrainScenario.Recipe(ImageClassifierArchitecture.VggSmall, quick);
                recipe.Epochs = 1;
                recipe.Convolution = kind;
                return recipe;
            }
            var candidates = new List<Candidate>();
            foreach (var (method, kind) in new[] { (Dense, ConvolutionKind.Convolution), ("shift", ConvolutionKind.Shift) })
            {
                Console.WriteLine($"== vgg-small: {method}");
                candidates.Add(Fit(ml, train, test, method, ml.MulticlassClassification.Trainers.ImageClassifier(Recipe(kind)), owned));
            }
            foreach (var (method, kind) in new[] { ("shift-attention", ConvolutionKind.ShiftAttention), ("shift-attention-shared", ConvolutionKind.ShiftAttentionShared) })
            {
                Console.WriteLine($"== vgg-small: {method}");
                var options = new ShiftAttentionTrainer.Options { Training = Recipe(ConvolutionKind.Convolution), LayerKind = kind };
                candidates.Add(Fit(ml, train, test, method, ml.Transforms.PruneAttention(options), owned));
            }
            // Channel pruning: smaller dense convolutions, the kind of compression ONNX Runtime speeds up too.
            ITransformer dense = owned[0];
            foreach (double reduction in new[] { 2.0, 4.0 })
            {
                string method = FormattableString.Invariant($"channels-l1-{reduction:0}x");
                Console.WriteLine($"== vgg-small: {method} (L1-filter, channels rounded to 16, no fine-tuning)");
                ITransformer pruned = ml.Transforms.PruneChannels(dense, new ChannelPruner.Options { MacsReduction = reduction, RoundChannelsTo = 16, RetrainEpochs = 0 })
                    .Fit(train);
                owned.Add(pruned);
                candidates.Add(Measured(method, ml, pruned, test) with { DenseShapes = false, Channels = ("l1", reduction) });
            }
            return WithDenseOnRuntime(candidates);
        }

        private static List<Candidate> LeNet300(MLContext ml, IDataView train, IDataView test, bool quick, List<ITransformer> owned)
        {
            Console.WriteLine("== lenet300: dense");
            var candidates = new List<Candidate>
            {
                Fit(ml, train, test, Dense, ml.MulticlassClassification.Trainers.ImageClassifier(TrainScenario.Recipe(ImageClassifierArchitecture.LeNet300100, quick)), owned),
            };
            ITransformer dense = owned[^1];
            Console.WriteLine("== lenet300: L-OBS and magnitude, 7% kept, no retraining");
            ITransformer lobs = ml.Transforms.PruneLayerwiseObs(dense, new LayerwiseObsPruner.Options { KeptFraction = 0.07 }).Fit(train);
            owned.Add(lobs);
            candidates.Add(Measured("lobs-7%", ml, lobs, test));
            ITransformer magnitude = ml.Transforms.PruneMagnitude(dense, new MagnitudePruner.Options { KeptFraction = 0.07 }).Fit(train);
            owned.Add(magnitude);
            candidates.Add(Measured("magnitude-7%", ml, magnitude, test));
            return WithDenseOnRuntime(candidates);
        }

        /// <summary>
        /// The sparse fully connected kernel (<see cref="CompactLinear"/>) against libtorch's dense product on the same
        /// weights, a 784→300 layer with 50% down to 5% of its weights kept, at batch 1 and 256: where sparse storage
        /// starts to pay.
        /// </summary>
        private static IEnumerable<BenchRow> SparseLinearSweep(bool quick)
        {
            Console.WriteLine($"== {SparseLinearModel}: sparse rows against the dense product");
            var rows = new List<BenchRow>();
            foreach (double kept in new[] { 0.5, 0.3, 0.2, 0.1, 0.05 })
            {
                var random = new Random(7);
                float[] weight = new float[SweepInputs * SweepOutputs];
                for (int i = 0; i < weight.Length; i++)
                    weight[i] = random.NextDouble() < kept ? (float)(random.NextDouble() - 0.5) : 0f;
                var kernel = new CompactLinear(weight, SweepInputs, SweepOutputs, bias: null, relu: true);
                Tensor denseWeight = tensor(weight, new long[] { SweepOutputs, SweepInputs }).DetachFromDisposeScope();
                try
                {
                    Func<int, Action> dense = n =>
                    {
                        Tensor input = rand(n, SweepInputs).DetachFromDisposeScope();
                        return () =>
                        {
                            using var scope = NewDisposeScope();
                            using var noGrad = no_grad();
                            nn.functional.linear(input, denseWeight).relu_();
                        };
                    };
                    var step = new CompactLinearStep("fc", kernel);
                    Func<int, Action> sparse = n => StepRun(step, n);
                    var (latency, throughput) = TimeLayers(new[] { dense, sparse }, quick ? 3 : 7, quick);
                    long macs = kernel.Terms;
                    BenchRow row = Row(SparseLinearModel, FormattableString.Invariant($"kept-{kept:0.##}"), "fc 784->300+relu", macs,
                        (double)(SweepInputs * SweepOutputs) / macs, quick, latency, throughput, 1, null);
                    row.KeptFraction = kept;
                    rows.Add(row);
                }
                finally
                {
                    denseWeight.Dispose();
                }
            }
            return rows;
        }

        /// <summary>The dense network once more, scored by the compact runtime (batch norm folded, ReLU and pooling fused),
        /// so that what the kernels gain is told apart from what the folding gains.</summary>
        private static List<Candidate> WithDenseOnRuntime(List<Candidate> candidates)
        {
            candidates.Insert(1, candidates[0] with { Method = DenseRuntime, Backend = InferenceBackend.Compact });
            return candidates;
        }

        private static Candidate Fit(MLContext ml, IDataView train, IDataView test, string method, IEstimator<ITransformer> estimator, List<ITransformer> owned)
        {
            var pipeline = ml.Transforms.Conversion.MapValueToKey("Label", keyOrdinality: ValueToKeyMappingEstimator.KeyOrdinality.ByValue)
                .Append(estimator)
                .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"));
            ITransformer model = pipeline.Fit(train);
            owned.Add(model);
            Candidate candidate = Measured(method, ml, model, test);
            return method == Dense ? candidate with { Backend = InferenceBackend.LibTorch } : candidate;
        }

        private static Candidate Measured(string method, MLContext ml, ITransformer model, IDataView test)
        {
            ImageClassificationTransformer classifier = model as ImageClassificationTransformer
                ?? ((IEnumerable<ITransformer>)model).OfType<ImageClassificationTransformer>().Single();
            double accuracy = ml.MulticlassClassification.Evaluate(model.Transform(test)).MicroAccuracy;
            long macs = classifier.GetSummary().NonZeroMultiplyAccumulates;
            Console.WriteLine(FormattableString.Invariant($"  {method}: test accuracy {accuracy:P2}, {macs:N0} MACs with a non-zero weight"));
            return new Candidate(method, classifier.Network, InferenceBackend.Compact, macs, accuracy, ml, model, test);
        }

        /// <summary>
        /// Times every candidate against the first (the dense network on libtorch), whole and layer by layer; and every model
        /// exported to ONNX and scored by ONNX Runtime, against the dense model on ONNX Runtime, interleaved with the others.
        /// </summary>
        private static IEnumerable<BenchRow> Compare(string model, IReadOnlyList<Candidate> candidates, bool quick)
        {
            Candidate dense = candidates[0];
            int repetitions = quick ? 3 : 7;
            var (single, batch) = InferenceTiming.Inputs(dense.Network.Definition.Input);

            // The same models on ONNX Runtime (the dense one once: its two other rows differ by backend only).
            var exported = new List<(Candidate Candidate, OnnxRuntimeScorer Scorer)>();
            try
            {
                foreach (Candidate candidate in candidates.Where(c => c.Method != DenseRuntime))
                    exported.Add((candidate, OnnxRuntimeScorer.Export(candidate.Context, candidate.Model.GetImageClassifier(), candidate.Test)));

                // Whole networks through the scoring entry point the transformer uses, then through ONNX Runtime.
                var runs = candidates.Select(c => (Action<float[]>)(images =>
                {
                    c.Network.Backend = c.Backend;
                    InferenceTiming.Time(c.Network, images);
                })).ToList();
                int onnxDense = runs.Count;
                runs.AddRange(exported.Select(e => (Action<float[]>)(images => e.Scorer.Score(images))));
                int[] references = Enumerable.Range(0, runs.Count).Select(i => i < onnxDense ? 0 : onnxDense).ToArray();
                var (latency, throughput) = TimeInterleaved(runs, single, batch, repetitions, quick, references);
                for (int i = 0; i < candidates.Count; i++)
                {
                    BenchRow row = Row(model, candidates[i].Method, null, candidates[i].Macs, (double)dense.Macs / candidates[i].Macs, quick,
                        latency, throughput, i, candidates[i].Accuracy);
                    row.Backend = BackendName(candidates[i].Backend);
                    (row.Criterion, row.TargetMacsReduction) = (candidates[i].Channels?.Criterion, candidates[i].Channels?.Target);
                    (row.EvaluateImagesPerS, row.BareImagesPerS, row.EvaluateRatio) = TimeEvaluate(candidates[i], quick ? 1 : 3);
                    yield return row;
                }
                for (int j = 0; j < exported.Count; j++)
                {
                    var (candidate, scorer) = exported[j];
                    float[] images = candidate.Test.GetColumn<float[]>("Features").SelectMany(image => image).ToArray();
                    string[] labels = candidate.Test.GetColumn<string>("Label").ToArray();
                    double accuracy = scorer.Accuracy(images, labels, candidate.Model.GetImageClassifier().ClassNames);
                    BenchRow row = Row(model, candidate.Method, null, candidate.Macs, (double)dense.Macs / candidate.Macs, quick,
                        latency, throughput, onnxDense + j, accuracy, reference: onnxDense);
                    row.Backend = OnnxRuntimeBackend;
                    (row.Criterion, row.TargetMacsReduction) = (candidate.Channels?.Criterion, candidate.Channels?.Target);
                    row.OnnxBytes = scorer.ModelBytes;
                    yield return row;
                }
            }
            finally
            {
                foreach (var (_, scorer) in exported)
                    scorer.Dispose();
            }

            // Layer by layer: each step of a compact plan against the dense network's modules for the same layers.
            foreach (Candidate candidate in candidates.Skip(1).Where(c => c.DenseShapes))
            {
                candidate.Network.Backend = InferenceBackend.Compact;
                InferencePlan plan = candidate.Network.CompiledForm()!;
                foreach (InferenceStep step in plan.Steps)
                {
                    Func<int, Action>? reference = DenseLayers(dense.Network, step);
                    if (reference is null)
                        continue;
                    var pair = new List<Func<int, Action>> { reference, n => StepRun(step, n) };
                    var (stepLatency, stepThroughput) = TimeLayers(pair, repetitions, quick);
                    long compactMacs = StepMacs(step, candidate.Network.Definition);
                    long denseMacs = DenseMacs(dense.Network.Definition, step);
                    BenchRow row = Row(model, candidate.Method, step.Layers, compactMacs, compactMacs == 0 ? null : (double)denseMacs / compactMacs, quick,
                        stepLatency, stepThroughput, 1, null);
                    row.Backend = BackendName(InferenceBackend.Compact);
                    yield return row;
                }
            }
        }

        /// <summary>
        /// Images per second of <c>Evaluate(model.Transform(test))</c>, the way an application scores a data set through
        /// ML.NET, and of the bare network on the same images in batches of 256, alternated; the ratio is the median of the
        /// per-repetition ratios.
        /// </summary>
        private static (double Evaluate, double Bare, double Ratio) TimeEvaluate(Candidate candidate, int repetitions)
        {
            candidate.Network.Backend = candidate.Backend;
            float[] images = candidate.Test.GetColumn<float[]>("Features").SelectMany(image => image).ToArray();
            int size = candidate.Network.Definition.Input.Size, count = images.Length / size, classes = candidate.Network.Definition.Classes;
            var probabilities = new float[InferencePlan.MaxPassImages * classes];
            void Bare()
            {
                for (int start = 0; start < count; start += InferencePlan.MaxPassImages)
                {
                    int n = Math.Min(InferencePlan.MaxPassImages, count - start);
                    candidate.Network.Predict(images.AsSpan(start * size, n * size), probabilities.AsSpan(0, n * classes));
                }
            }
            void Evaluate() => candidate.Context.MulticlassClassification.Evaluate(candidate.Model.Transform(candidate.Test));
            Evaluate();
            Bare();
            var evaluate = new double[repetitions];
            var bare = new double[repetitions];
            for (int r = 0; r < repetitions; r++)
            {
                evaluate[r] = count / (Milliseconds(Evaluate) / 1000);
                bare[r] = count / (Milliseconds(Bare) / 1000);
            }
            return (InferenceTiming.Median(evaluate), InferenceTiming.Median(bare),
                InferenceTiming.Median(Enumerable.Range(0, repetitions).Select(r => evaluate[r] / bare[r]).ToArray()));
        }

        private static BenchRow Row(string model, string method, string? layer, long macs, double? macsRatio, bool quick,
            IReadOnlyList<(double Median, double Speedup)> latency, IReadOnlyList<(double Median, double Speedup)> throughput, int index, double? accuracy,
            int reference = 0)
            => new()
            {
                Scenario = "runtime",
                Model = model,
                Method = method,
                Layer = layer,
                Quick = quick,
                Accuracy = accuracy,
                Macs = macs,
                MacsRatio = macsRatio,
                LatencyB1Ms = latency[index].Median,
                ThroughputB256 = throughput[index].Median,
                ReferenceLatencyB1Ms = latency[reference].Median,
                ReferenceThroughputB256 = throughput[reference].Median,
                SpeedupB1 = index == reference ? null : latency[index].Speedup,
                SpeedupB256 = index == reference ? null : throughput[index].Speedup,
            };

        /// <summary>
        /// Batch-1 latency (median of many calls) and batch-256 throughput of each run, all runs interleaved in every
        /// repetition; speedups are per-repetition ratios against the first run, then medians, so that the noise of a
        /// shared machine hits every run alike. <paramref name="references"/> names each run's reference (default: the first).
        /// </summary>
        private static (List<(double, double)> Latency, List<(double, double)> Throughput) TimeInterleaved(
            IReadOnlyList<Action<float[]>> runs, float[] single, float[] batch, int repetitions, bool quick, IReadOnlyList<int>? references = null)
        {
            var layers = runs.Select(run => (Func<int, Action>)(n => () => run(n == 1 ? single : batch))).ToList();
            return TimeLayers(layers, repetitions, quick, references);
        }

        private static (List<(double, double)> Latency, List<(double, double)> Throughput) TimeLayers(IReadOnlyList<Func<int, Action>> runs, int repetitions, bool quick,
            IReadOnlyList<int>? references = null)
        {
            int Reference(int run) => references?[run] ?? 0;
            Action[] ones = runs.Select(r => r(1)).ToArray(), batches = runs.Select(r => r(256)).ToArray();
            int latencyCalls = quick ? 50 : 300, throughputCalls = quick ? 3 : 7;
            foreach (Action run in ones.Concat(batches))
            {
                for (int i = 0; i < 5; i++)
                    run();
            }
            var latency = new double[repetitions, runs.Count];
            var throughput = new double[repetitions, runs.Count];
            for (int r = 0; r < repetitions; r++)
            {
                for (int n = 0; n < runs.Count; n++)
                {
                    InferenceTiming.Settle();
                    latency[r, n] = InferenceTiming.Median(Enumerable.Range(0, latencyCalls).Select(_ => Milliseconds(ones[n])).ToArray());
                    throughput[r, n] = InferenceTiming.Median(Enumerable.Range(0, throughputCalls).Select(_ => 256 / (Milliseconds(batches[n]) / 1000)).ToArray());
                }
            }
            double Median(Func<int, double> value) => InferenceTiming.Median(Enumerable.Range(0, repetitions).Select(value).ToArray());
            var latencies = Enumerable.Range(0, runs.Count).Select(n => (Median(r => latency[r, n]), Median(r => latency[r, Reference(n)] / latency[r, n]))).ToList();
            var throughputs = Enumerable.Range(0, runs.Count).Select(n => (Median(r => throughput[r, n]), Median(r => throughput[r, n] / throughput[r, Reference(n)]))).ToList();
            return (latencies, throughputs);
        }

        private static double Milliseconds(Action run)
        {
            var clock = Stopwatch.StartNew();
            run();
            return clock.Elapsed.TotalMilliseconds;
        }

        /// <summary>A run of one plan step on random activations of <c>n</c> images.</summary>
        private static Action StepRun(InferenceStep step, int images)
        {
            var random = new Random(3);
            float[] input = GC.AllocateUninitializedArray<float>(images * step.InputSize, pinned: true);
            for (int i = 0; i < input.Length; i++)
                input[i] = (float)random.NextDouble();
            float[] output = GC.AllocateUninitializedArray<float>(images * step.OutputSize, pinned: true);
            return () => step.Run(input, output, images);
        }

        /// <summary>
        /// The dense network's modules for the layers of <paramref name="step"/> (from its first to its last layer, batch
        /// norm included), on random input of <c>n</c> images, or null when the dense network has no such layers.
        /// </summary>
        private static Func<int, Action>? DenseLayers(ClassifierNetwork dense, InferenceStep step)
        {
            var (first, last) = DenseRange(dense.Definition, step);
            if (first < 0)
                return null;
            var children = dense.Module.named_children().Select(c => (nn.Module<Tensor, Tensor>)c.module).ToArray();
            return n =>
            {
                Tensor input = rand(new long[] { n }.Concat(step.InputShape.Select(d => (long)d)).ToArray()).DetachFromDisposeScope();
                return () =>
                {
                    using var scope = NewDisposeScope();
                    using var noGrad = no_grad();
                    Tensor x = input;
                    for (int i = first; i <= last; i++)
                        x = children[i].call(i == first ? x.clone() : x); // ReLU modules work in place
                };
            };
        }

        private static (int First, int Last) DenseRange(NetworkDefinition dense, InferenceStep step)
        {
            string[] names = step.Layers.Split('+');
            var layers = dense.Layers;
            int first = layers.ToList().FindIndex(l => l.Name == names[0]);
            int last = layers.ToList().FindIndex(l => l.Name == names[^1]);
            return first < 0 || last < first ? (-1, -1) : (first, last);
        }

        private static long DenseMacs(NetworkDefinition dense, InferenceStep step)
        {
            var (first, last) = DenseRange(dense, step);
            long total = 0;
            int[] shape = dense.InputDimensions;
            for (int i = 0; i < dense.Layers.Count; i++)
            {
                if (i >= first && i <= last)
                    total += dense.Layers[i].MultiplyAccumulates(shape);
                shape = dense.Layers[i].OutputShape(shape);
            }
            return total;
        }

        /// <summary>What a compact step multiplies: its kept terms per output pixel, or the dense cost of a libtorch step.</summary>
        private static long StepMacs(InferenceStep step, NetworkDefinition definition) => step switch
        {
            CompactConvolutionStep conv => conv.Kernel.MultiplyAccumulates,
            CompactLinearStep linear => linear.Kernel.Terms,
            _ => DenseMacs(definition, step),
        };

        private static string BackendName(InferenceBackend backend) => backend == InferenceBackend.LibTorch ? "libtorch" : "compact";
    }
}
