// Licensed under the MIT license.

using System;
using System.Diagnostics;
using System.Linq;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Networks;

namespace FashionMnistClassifier
{
    /// <summary>
    /// Batch-1 latency and batch-256 throughput of a model's network through <c>ClassifierNetwork.Predict</c>, the call
    /// the transformer scores with (a <c>PredictionEngine</c> adds ML.NET's per-row cost to the latency), as medians
    /// after a warm-up.
    /// </summary>
    internal static class InferenceTiming
    {
        private const int LatencyCalls = 300;
        private const int ThroughputCalls = 9;

        public static (double LatencyMs, double ImagesPerSecond) Measure(ImageClassificationTransformer classifier)
        {
            ClassifierNetwork network = classifier.Network;
            int size = network.Definition.Input.Size, classes = network.Definition.Classes;
            var random = new Random(5);
            float[] batch = Enumerable.Range(0, 256 * size).Select(_ => (float)random.NextDouble()).ToArray();
            float[] single = batch[..size];
            float[] probabilities = new float[256 * classes];

            for (int i = 0; i < 20; i++)
                Time(network, single, probabilities);
            double latency = Median(Enumerable.Range(0, LatencyCalls).Select(_ => Time(network, single, probabilities)));
            Time(network, batch, probabilities);
            double throughput = Median(Enumerable.Range(0, ThroughputCalls).Select(_ => 256 / (Time(network, batch, probabilities) / 1000)));
            return (latency, throughput);
        }

        private static double Time(ClassifierNetwork network, float[] images, float[] probabilities)
        {
            int count = images.Length / network.Definition.Input.Size;
            var clock = Stopwatch.StartNew();
            network.Predict(images, probabilities.AsSpan(0, count * network.Definition.Classes));
            return clock.Elapsed.TotalMilliseconds;
        }

        private static double Median(System.Collections.Generic.IEnumerable<double> values)
        {
            double[] sorted = values.OrderBy(v => v).ToArray();
            return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
        }
    }
}
