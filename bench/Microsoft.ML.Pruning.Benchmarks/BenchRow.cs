// Licensed under the MIT license.

using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Microsoft.ML.Pruning.Benchmarks
{
    /// <summary>One measured configuration, in the row format every scenario writes (see the README's benchmark section).</summary>
    internal sealed class BenchRow
    {
        [JsonPropertyName("scenario")] public string Scenario { get; set; } = "";
        [JsonPropertyName("model")] public string Model { get; set; } = "";
        [JsonPropertyName("method")] public string Method { get; set; } = "";
        [JsonPropertyName("quick")] public bool Quick { get; set; }
        [JsonPropertyName("epochs")] public double? Epochs { get; set; }
        [JsonPropertyName("accuracy")] public double? Accuracy { get; set; }
        [JsonPropertyName("params")] public long? Params { get; set; }
        [JsonPropertyName("nonzero_params")] public long? NonZeroParams { get; set; }
        [JsonPropertyName("macs")] public long? Macs { get; set; }
        [JsonPropertyName("zip_bytes")] public long? ZipBytes { get; set; }
        [JsonPropertyName("latency_b1_ms")] public double? LatencyB1Ms { get; set; }
        [JsonPropertyName("throughput_b256")] public double? ThroughputB256 { get; set; }
        [JsonPropertyName("images_per_s")] public double? ImagesPerSecond { get; set; }
        [JsonPropertyName("overhead_pct")] public double? OverheadPct { get; set; }
        [JsonPropertyName("train_seconds")] public double? TrainSeconds { get; set; }
        [JsonPropertyName("reload_identical")] public bool? ReloadIdentical { get; set; }
        [JsonPropertyName("kept_fraction")] public double? KeptFraction { get; set; }
        [JsonPropertyName("retrain")] public string? Retrain { get; set; }
        [JsonPropertyName("prune_seconds")] public double? PruneSeconds { get; set; }
        [JsonPropertyName("macs_ratio")] public double? MacsRatio { get; set; }
        [JsonPropertyName("speedup_b1")] public double? SpeedupB1 { get; set; }
        [JsonPropertyName("speedup_b256")] public double? SpeedupB256 { get; set; }
        [JsonPropertyName("converted_params_ratio")] public double? ConvertedParamsRatio { get; set; }
        [JsonPropertyName("converted_macs_ratio")] public double? ConvertedMacsRatio { get; set; }
        [JsonPropertyName("layer")] public string? Layer { get; set; }
        [JsonPropertyName("reference_latency_b1_ms")] public double? ReferenceLatencyB1Ms { get; set; }
        [JsonPropertyName("reference_throughput_b256")] public double? ReferenceThroughputB256 { get; set; }
        [JsonPropertyName("evaluate_images_per_s")] public double? EvaluateImagesPerS { get; set; }
        [JsonPropertyName("bare_images_per_s")] public double? BareImagesPerS { get; set; }
        [JsonPropertyName("evaluate_ratio")] public double? EvaluateRatio { get; set; }
        [JsonPropertyName("width")] public double? Width { get; set; }
        [JsonPropertyName("backend")] public string? Backend { get; set; }
        [JsonPropertyName("criterion")] public string? Criterion { get; set; }
        [JsonPropertyName("target_macs_reduction")] public double? TargetMacsReduction { get; set; }
        [JsonPropertyName("finetune_epochs")] public int? FinetuneEpochs { get; set; }
        [JsonPropertyName("selection_seconds")] public double? SelectionSeconds { get; set; }
        [JsonPropertyName("topdown_images_per_s")] public double? TopdownImagesPerS { get; set; }
        [JsonPropertyName("model_file")] public string? ModelFile { get; set; }
        [JsonPropertyName("clients")] public int? Clients { get; set; }
        [JsonPropertyName("duration_s")] public double? DurationSeconds { get; set; }
        [JsonPropertyName("requests")] public long? Requests { get; set; }
        [JsonPropertyName("requests_per_s")] public double? RequestsPerSecond { get; set; }
        [JsonPropertyName("latency_p50_ms")] public double? LatencyP50Ms { get; set; }
        [JsonPropertyName("latency_p99_ms")] public double? LatencyP99Ms { get; set; }
        [JsonPropertyName("errors")] public long? Errors { get; set; }
        [JsonPropertyName("kept_connections")] public double? KeptConnections { get; set; }
        [JsonPropertyName("target_kept_connections")] public double? TargetKeptConnections { get; set; }
        [JsonPropertyName("layer_kept_connections")] public Dictionary<string, double>? LayerKeptConnections { get; set; }
        [JsonPropertyName("sparsity_epochs")] public int? SparsityEpochs { get; set; }
        [JsonPropertyName("lambda")] public double? Lambda { get; set; }
        [JsonPropertyName("onnx_bytes")] public long? OnnxBytes { get; set; }
        [JsonPropertyName("seed")] public int? Seed { get; set; }
        [JsonPropertyName("allocation")] public string? Allocation { get; set; }

        /// <summary>A copy of every field.</summary>
        public BenchRow Copy() => (BenchRow)MemberwiseClone();
    }

    internal static class BenchOutput
    {
        private static readonly JsonSerializerOptions s_json = new()
        {
            WriteIndented = true,
            DefaultIgnoreCondition = JsonIgnoreCondition.Never,
        };

        /// <summary>
        /// Writes artifacts/bench/&lt;scenario&gt;.json. Rows of earlier runs for another model, method, layer, epoch
        /// count, quick-ness, width, backend, criterion, MACs target, connection target, seed, allocation, kept fraction or retraining are kept, so a scenario can be run one model (or one training length, or one width) at a time.
        /// </summary>
        public static string Write(string scenario, IReadOnlyList<BenchRow> rows)
        {
            string path = PathOf(scenario);
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            var merged = new List<BenchRow>(Read(scenario).Where(p => !rows.Any(r => r.Model == p.Model && r.Method == p.Method && r.Layer == p.Layer
                && r.Epochs == p.Epochs && r.Quick == p.Quick && r.Width == p.Width && r.Backend == p.Backend && r.Criterion == p.Criterion
                && r.TargetMacsReduction == p.TargetMacsReduction && r.TargetKeptConnections == p.TargetKeptConnections && r.Seed == p.Seed && r.Allocation == p.Allocation
                && r.KeptFraction == p.KeptFraction && r.Retrain == p.Retrain)));
            merged.AddRange(rows);
            File.WriteAllText(path, JsonSerializer.Serialize(merged, s_json));
            return path;
        }

        /// <summary>The rows of artifacts/bench/&lt;scenario&gt;.json, or none when it does not exist.</summary>
        public static IReadOnlyList<BenchRow> Read(string scenario)
        {
            string path = PathOf(scenario);
            return File.Exists(path)
                ? JsonSerializer.Deserialize<List<BenchRow>>(File.ReadAllText(path), s_json) ?? new List<BenchRow>()
                : new List<BenchRow>();
        }

        private static string PathOf(string scenario) => Path.Combine("artifacts", "bench", scenario + ".json");
    }
}
