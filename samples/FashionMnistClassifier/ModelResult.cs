// Licensed under the MIT license.

using Microsoft.ML.Pruning.Pruners;

namespace FashionMnistClassifier
{
    /// <summary>What the demo measured of one model.</summary>
    /// <param name="Name">"dense" or the pruning method's name.</param>
    /// <param name="Description">How the model was made.</param>
    /// <param name="Accuracy">Test accuracy (micro), 0..1.</param>
    /// <param name="Parameters">All parameters of the network.</param>
    /// <param name="NonZeroParameters">Parameters that are not zero: what pruning left.</param>
    /// <param name="NonZeroMacs">Multiply-accumulates per image with a non-zero weight.</param>
    /// <param name="ZipBytes">The size of the saved model zip.</param>
    /// <param name="LatencyMs">Median time to score one image.</param>
    /// <param name="ImagesPerSecond">Median throughput scoring batches of 256 images.</param>
    /// <param name="ZipPath">Where the model was saved.</param>
    /// <param name="ReloadIdentical">The model reloaded from its zip predicts as the model in memory.</param>
    /// <param name="Report">The pruner's report; null for the dense model.</param>
    internal sealed record ModelResult(string Name, string Description, double Accuracy, long Parameters, long NonZeroParameters,
        long NonZeroMacs, long ZipBytes, double LatencyMs, double ImagesPerSecond, string ZipPath, bool ReloadIdentical, PruningReport? Report);
}
