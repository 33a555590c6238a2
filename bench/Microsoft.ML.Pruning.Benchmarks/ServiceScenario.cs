// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Net.Http;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using Microsoft.ML.Data;
using Microsoft.ML.Pruning.Data;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Pruners;
using Microsoft.ML.Pruning.Training;
using PruningService;
using SkiaSharp;

namespace Microsoft.ML.Pruning.Benchmarks
{
    /// <summary>
    /// Scenario <c>service</c>: the web service sample (<c>samples/PruningService</c>) under load. For a dense and a
    /// pruned model it starts the real server (Kestrel) on the loopback address, and N clients, each its own
    /// <see cref="HttpClient"/> with its own connection, post Fashion-MNIST test images as PNG files one after the
    /// other for a fixed time; it reports requests per second, median and 99th-percentile latency, the accuracy of the
    /// answers, and the same images scored in the process through the service's model host without HTTP.
    /// </summary>
    /// <remarks>
    /// Models: <c>--model-zips dense.zip,pruned.zip</c>; by default the small VGG and its 4×-fewer-MACs L1 channel-pruned
    /// form of the <c>channels</c> scenario (<c>artifacts/bench/models/</c>) when they are there, else a LeNet-5 trained
    /// here for two epochs and channel-pruned to half its MACs with one epoch of fine-tuning (kept in the same folder for
    /// later runs). Options: <c>--clients N</c> (16), <c>--seconds S</c> per model (20; 5 with <c>--quick</c>),
    /// <c>--images N</c> (2,000 test images, posted in turn).
    /// </remarks>
    internal static class ServiceScenario
    {
        private static readonly string s_models = Path.Combine("artifacts", "bench", "models");

        public static int Run(string[] args)
        {
            bool quick = args.Contains("--quick");
            int clients = BenchArgs.Option(args, "--clients", 16);
            double seconds = double.Parse(BenchArgs.Option(args, "--seconds") ?? (quick ? "5" : "20"), CultureInfo.InvariantCulture);
            int imageCount = BenchArgs.Option(args, "--images", quick ? 500 : 2000);
            string[] zips = BenchArgs.Option(args, "--model-zips")?.Split(',') ?? DefaultModels(quick);

            var ml = new MLContext(seed: 1);
            (byte[] Png, string Label)[] images = TestImages(ml, imageCount);
            Console.WriteLine(FormattableString.Invariant(
                $"{images.Length:N0} Fashion-MNIST test images as PNG ({images.Average(i => i.Png.Length):N0} bytes on average), {clients} clients, {seconds} s per model after {Warmup(seconds)} s of warm-up"));

            var rows = new List<BenchRow>();
            foreach (string zip in zips)
                rows.Add(Measure(zip, images, clients, seconds, quick).GetAwaiter().GetResult());

            Console.WriteLine();
            Table.Print(
                new[] { "Model", "Method", "Params", "MACs", "Zip", "Clients", "Requests", "Req/s", "p50 ms", "p99 ms", "In-process ms", "Accuracy", "Errors" },
                rows.Select(r => (IReadOnlyList<string>)new[]
                {
                    r.Model, r.Method, Table.Format(r.Params), Table.Format(r.Macs), Table.Format(r.ZipBytes), Table.Format(r.Clients),
                    Table.Format(r.Requests), Table.Format(r.RequestsPerSecond, "N0"), Table.Format(r.LatencyP50Ms, "F2"), Table.Format(r.LatencyP99Ms, "F2"),
                    Table.Format(r.LatencyB1Ms, "F3"), Table.Format(r.Accuracy * 100, "F2") + " %", Table.Format(r.Errors),
                }));
            Console.WriteLine($"written to {BenchOutput.Write("service", rows)}");
            return rows.All(r => r.Errors == 0) ? 0 : 1;
        }

        private static double Warmup(double seconds) => Math.Min(3, Math.Max(1, seconds / 10));

        private static async Task<BenchRow> Measure(string zip, (byte[] Png, string Label)[] images, int clients, double seconds, bool quick)
        {
            string[] args =
            {
                $"--Model:Path={zip}", "--urls=http://127.0.0.1:0",
                "--Logging:LogLevel:Default=Warning", "--Logging:LogLevel:Microsoft.AspNetCore=Warning",
            };
            await using WebApplication app = ServiceApp.Create(args);
            await app.StartAsync();
            var address = new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First());
            ModelHost host = app.Services.GetRequiredService<ModelHost>();
            Console.WriteLine($"== {Path.GetFileName(zip)}: {host.Summary.Architecture} ({host.Method}), {host.Summary.Parameters:N0} parameters, {host.Summary.MultiplyAccumulates:N0} MACs, served at {address}");

            HttpClient[] http = Enumerable.Range(0, clients).Select(_ => new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 1 }) { BaseAddress = address }).ToArray();
            try
            {
                await Drive(http, images, TimeSpan.FromSeconds(Warmup(seconds)));
                Load load = await Drive(http, images, TimeSpan.FromSeconds(seconds));

                // Then the same images through the service's model host in this process, one at a time: decoding and
                // scoring without HTTP.
                var inProcess = new double[Math.Min(images.Length, 1000)];
                for (int i = 0; i < inProcess.Length; i++)
                {
                    long start = Stopwatch.GetTimestamp();
                    host.Predict(images[i].Png);
                    inProcess[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
                }
                double[] latencies = load.Latencies.OrderBy(l => l).ToArray();
                var row = new BenchRow
                {
                    Scenario = "service",
                    Model = host.Summary.Architecture,
                    Method = host.Method,
                    Quick = quick,
                    Accuracy = load.Correct / (double)Math.Max(1, latencies.Length),
                    Params = host.Summary.Parameters,
                    NonZeroParams = host.Summary.NonZeroParameters,
                    Macs = host.Summary.MultiplyAccumulates,
                    ZipBytes = host.ZipBytes,
                    LatencyB1Ms = Median(inProcess),
                    Backend = "compact",
                    ModelFile = Path.GetFileName(zip),
                    Clients = clients,
                    DurationSeconds = load.Elapsed.TotalSeconds,
                    Requests = latencies.Length,
                    RequestsPerSecond = latencies.Length / load.Elapsed.TotalSeconds,
                    LatencyP50Ms = Percentile(latencies, 0.50),
                    LatencyP99Ms = Percentile(latencies, 0.99),
                    Errors = load.Errors,
                };
                Console.WriteLine(FormattableString.Invariant(
                    $"  {row.Requests:N0} requests in {row.DurationSeconds:F1} s: {row.RequestsPerSecond:N0}/s, p50 {row.LatencyP50Ms:F2} ms, p99 {row.LatencyP99Ms:F2} ms, accuracy {row.Accuracy:P2}, {row.Errors} errors; in process {row.LatencyB1Ms:F3} ms per image"));
                return row;
            }
            finally
            {
                foreach (HttpClient client in http)
                    client.Dispose();
                await app.StopAsync();
            }
        }

        private sealed record Load(List<double> Latencies, long Correct, long Errors, TimeSpan Elapsed);

        /// <summary>Every client posts the next image of the shared sequence as soon as its previous answer is in, until the time is up.</summary>
        private static async Task<Load> Drive(HttpClient[] clients, (byte[] Png, string Label)[] images, TimeSpan duration)
        {
            long next = -1, correct = 0, errors = 0;
            var stopwatch = Stopwatch.StartNew();
            List<double>[] latencies = await Task.WhenAll(clients.Select(client => Task.Run(async () =>
            {
                var mine = new List<double>();
                while (stopwatch.Elapsed < duration)
                {
                    var (png, label) = images[Interlocked.Increment(ref next) % images.Length];
                    using var content = new ByteArrayContent(png) { Headers = { ContentType = new MediaTypeHeaderValue("image/png") } };
                    long start = Stopwatch.GetTimestamp();
                    using HttpResponseMessage response = await client.PostAsync("/predict", content);
                    JsonElement answer = response.IsSuccessStatusCode ? await response.Content.ReadFromJsonAsync<JsonElement>() : default;
                    double elapsed = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
                    if (!response.IsSuccessStatusCode)
                    {
                        Interlocked.Increment(ref errors);
                        continue;
                    }
                    mine.Add(elapsed);
                    if (answer.GetProperty("label").GetString() == label)
                        Interlocked.Increment(ref correct);
                }
                return mine;
            })));
            TimeSpan elapsed = stopwatch.Elapsed;
            return new Load(latencies.SelectMany(l => l).ToList(), correct, errors, elapsed);
        }

        /// <summary>The first <paramref name="count"/> test images as 28×28 gray PNG files, with their class names.</summary>
        private static (byte[] Png, string Label)[] TestImages(MLContext ml, int count)
        {
            IDataView test = FashionMnist.LoadTest(ml, count);
            string[] labels = test.GetColumn<string>("Label").ToArray();
            float[][] pixels = test.GetColumn<float[]>("Features").ToArray();
            return pixels.Zip(labels).Select(image =>
            {
                using var bitmap = new SKBitmap(new SKImageInfo(28, 28, SKColorType.Gray8, SKAlphaType.Opaque));
                for (int p = 0; p < 28 * 28; p++)
                {
                    byte level = (byte)Math.Clamp(MathF.Round(image.First[p] * 255), 0, 255);
                    bitmap.SetPixel(p % 28, p / 28, new SKColor(level, level, level));
                }
                using SKData png = bitmap.Encode(SKEncodedImageFormat.Png, 100);
                return (png.ToArray(), image.Second);
            }).ToArray();
        }

        /// <summary>The small VGG and its 4× L1 channel-pruned form from the channels scenario, or a LeNet-5 pair made here.</summary>
        private static string[] DefaultModels(bool quick)
        {
            string vgg = Path.Combine(s_models, "channels-vgg-small-dense.zip");
            string vggPruned = Path.Combine(s_models, "channels-pruned-vgg-small-l1-4x-ft5-r16.zip");
            if (File.Exists(vgg) && File.Exists(vggPruned))
                return new[] { vgg, vggPruned };

            string suffix = quick ? "-quick" : "";
            string lenet = Path.Combine(s_models, $"service-lenet5-dense{suffix}.zip");
            string lenetPruned = Path.Combine(s_models, $"service-lenet5-channels-2x{suffix}.zip");
            if (File.Exists(lenet) && File.Exists(lenetPruned))
                return new[] { lenet, lenetPruned };

            Console.WriteLine($"No models of the channels scenario in {s_models}: training LeNet-5 and pruning its channels.");
            Directory.CreateDirectory(s_models);
            var ml = new MLContext(seed: 1);
            IDataView train = ml.Data.Cache(FashionMnist.LoadTrain(ml, quick ? 10000 : 60000));
            ITransformer dense = ml.Transforms.Conversion.MapValueToKey("Label")
                .Append(ml.MulticlassClassification.Trainers.ImageClassifier(new ImageClassifierTrainer.Options
                {
                    Architecture = ImageClassifierArchitecture.LeNet5,
                    Epochs = quick ? 1 : 2,
                }))
                .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"))
                .Fit(train);
            ITransformer pruned = ml.Transforms.PruneChannels(dense, new ChannelPruner.Options { MacsReduction = 2, RetrainEpochs = 1 }).Fit(train);
            ml.Model.Save(dense, train.Schema, lenet);
            ml.Model.Save(pruned, train.Schema, lenetPruned);
            return new[] { lenet, lenetPruned };
        }

        private static double Median(double[] values) => Percentile(values.OrderBy(v => v).ToArray(), 0.5);

        /// <summary>The nearest-rank percentile of sorted values.</summary>
        private static double Percentile(double[] sorted, double fraction)
            => sorted.Length == 0 ? double.NaN : sorted[Math.Clamp((int)Math.Ceiling(fraction * sorted.Length) - 1, 0, sorted.Length - 1)];
    }
}
