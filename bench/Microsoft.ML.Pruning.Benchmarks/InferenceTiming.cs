// Licensed under the MIT license.

using System;
using System.Diagnostics;
using System.Linq;
using System.Threading;
using Microsoft.ML.Pruning.Networks;

namespace Microsoft.ML.Pruning.Benchmarks
{
    /// <summary>
    /// Batch-1 latency and batch-256 throughput of a network through <see cref="ClassifierNetwork.Predict(ReadOnlySpan{float}, Span{float})"/>,
    /// the scoring entry point of the transformer (the compact runtime by default), as medians after a warm-up.
    /// </summary>
    internal static class InferenceTiming
    {
        public static (double LatencyMs, double ImagesPerSecond) Measure(ClassifierNetwork network, bool quick)
        {
            var (single, batch) = Inputs(network.Definition.Input);
            int latencyCalls = quick ? 50 : 300, throughputCalls = quick ? 3 : 9;

            for (int i = 0; i < 10; i++)
                Time(network, single);
            double[] latencies = Enumerable.Range(0, latencyCalls).Select(_ => Time(network, single)).ToArray();
            Time(network, batch);
            double[] throughputs = Enumerable.Range(0, throughputCalls).Select(_ => 256 / (Time(network, batch) / 1000)).ToArray();
            return (Median(latencies), Median(throughputs));
        }

        /// <summary>One image and 256 images of <paramref name="shape"/>, pseudo-random pixels in [0, 1).</summary>
        public static (float[] Single, float[] Batch) Inputs(ImageShape shape)
        {
            var random = new Random(5);
            float[] batch = new float[256 * shape.Size];
            for (int i = 0; i < batch.Length; i++)
                batch[i] = (float)random.NextDouble();
            return (batch[..shape.Size], batch);
        }

        /// <summary>Milliseconds to score <paramref name="images"/> (whole images, channels first).</summary>
        public static double Time(ClassifierNetwork network, float[] images)
        {
            var probabilities = new float[images.Length / network.Definition.Input.Size * network.Definition.Classes];
            var clock = Stopwatch.StartNew();
            network.Predict(images, probabilities);
            return clock.Elapsed.TotalMilliseconds;
        }

        /// <summary>Milliseconds for ONNX Runtime to score <paramref name="images"/> (whole images, channels first).</summary>
        public static double Time(OnnxRuntimeScorer scorer, float[] images)
        {
            var clock = Stopwatch.StartNew();
            scorer.Score(images);
            return clock.Elapsed.TotalMilliseconds;
        }

        /// <summary>
        /// Lets the worker threads of the runtime timed before go idle: ONNX Runtime's pool spins after every run and, on a
        /// two-core machine, takes a core from the next runtime's first calls. Called before each runtime's timing.
        /// </summary>
        public static void Settle() => Thread.Sleep(50);

        public static double Median(double[] values)
        {
            var sorted = values.OrderBy(v => v).ToArray();
            return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
        }
    }
}
