// Licensed under the MIT license.

using System;
using System.Diagnostics;
using System.Linq;
using Microsoft.ML.Pruning.Networks;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Benchmarks
{
    /// <summary>Batch-1 latency and batch-256 throughput of a network, as medians after a warm-up.</summary>
    internal static class InferenceTiming
    {
        public static (double LatencyMs, double ImagesPerSecond) Measure(ClassifierNetwork network, bool quick)
        {
            ImageShape shape = network.Definition.Input;
            using var single = randn(1, shape.Channels, shape.Height, shape.Width);
            using var batch = randn(256, shape.Channels, shape.Height, shape.Width);
            int latencyCalls = quick ? 50 : 300, throughputCalls = quick ? 3 : 9;

            for (int i = 0; i < 10; i++)
                Run(network, single);
            double[] latencies = Enumerable.Range(0, latencyCalls).Select(_ => Time(network, single)).ToArray();
            Run(network, batch);
            double[] throughputs = Enumerable.Range(0, throughputCalls).Select(_ => 256 / (Time(network, batch) / 1000)).ToArray();
            return (Median(latencies), Median(throughputs));
        }

        public static double Median(double[] values)
        {
            var sorted = values.OrderBy(v => v).ToArray();
            return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
        }

        private static double Time(ClassifierNetwork network, Tensor input)
        {
            var clock = Stopwatch.StartNew();
            Run(network, input);
            return clock.Elapsed.TotalMilliseconds;
        }

        private static void Run(ClassifierNetwork network, Tensor input)
        {
            using var scope = NewDisposeScope();
            network.Predict(input);
        }
    }
}
