// Licensed under the MIT license.

using System.Collections.Generic;
using System.Text.Json.Serialization;

namespace PruningService
{
    /// <summary>One class's probability.</summary>
    /// <param name="Label">The class name.</param>
    /// <param name="Score">Its probability.</param>
    public sealed record ClassScore(string Label, float Score);

    /// <summary>The image as it was received.</summary>
    /// <param name="Format">The encoded format: <c>png</c> or <c>jpeg</c>.</param>
    /// <param name="Width">Its width in pixels.</param>
    /// <param name="Height">Its height in pixels.</param>
    /// <param name="Resized">True when it was resized to the model's input size before scoring.</param>
    public sealed record ImageDescription(string Format, int Width, int Height, bool Resized);

    /// <summary>The prediction for one image.</summary>
    /// <param name="File">The form file name, for images sent as multipart form files; absent for a raw body.</param>
    /// <param name="Label">The most probable class.</param>
    /// <param name="Score">Its probability.</param>
    /// <param name="Scores">Every class's probability, in the model's class order.</param>
    /// <param name="Image">The image as received.</param>
    public sealed record ImagePrediction(
        [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? File,
        string Label, float Score, IReadOnlyList<ClassScore> Scores, ImageDescription Image);

    /// <summary>The predictions for the images of a multipart request, in the order of its files.</summary>
    /// <param name="Predictions">One per file.</param>
    public sealed record ImagePredictions(IReadOnlyList<ImagePrediction> Predictions);

    /// <summary>One layer of the served network.</summary>
    /// <param name="Path">Its module path.</param>
    /// <param name="Kind">Its kind and shape, e.g. <c>Conv2d 3x3 32->64</c>.</param>
    /// <param name="Parameters">Stored parameters.</param>
    /// <param name="NonZeroParameters">Parameters that are not zero.</param>
    /// <param name="MultiplyAccumulates">Multiply-accumulates for one image.</param>
    public sealed record LayerDescription(string Path, string Kind, long Parameters, long NonZeroParameters, long MultiplyAccumulates);

    /// <summary>What <c>GET /model</c> tells about the served model (from the library's <c>GetSummary()</c>).</summary>
    /// <param name="Path">The model zip served.</param>
    /// <param name="Architecture">The architecture it was built from, e.g. <c>vgg-small</c>.</param>
    /// <param name="Method">
    /// What the stored network shows of how it was made: <c>dense</c>, <c>sparse</c> (pruned weights stored as zeros:
    /// magnitude, L-OBS), <c>channels</c> (fewer channels or units than the architecture has: channel pruning, DCP),
    /// <c>shift</c> or <c>shift-attention</c> (compact shift layers).
    /// </param>
    /// <param name="Input">The image shape the model takes, channels × height × width.</param>
    /// <param name="Classes">The class names, in the order of the scores.</param>
    /// <param name="Parameters">Stored parameters.</param>
    /// <param name="NonZeroParameters">Parameters that are not zero.</param>
    /// <param name="MultiplyAccumulates">Multiply-accumulates for one image.</param>
    /// <param name="NonZeroMultiplyAccumulates">Multiply-accumulates with a non-zero weight.</param>
    /// <param name="SerializedBytes">Bytes of the serialized network (definition and weights).</param>
    /// <param name="ZipBytes">Bytes of the model zip.</param>
    /// <param name="Layers">The layers that have parameters or multiply-accumulates.</param>
    public sealed record ModelDescription(string Path, string Architecture, string Method, string Input, IReadOnlyList<string> Classes,
        long Parameters, long NonZeroParameters, long MultiplyAccumulates, long NonZeroMultiplyAccumulates, long SerializedBytes, long ZipBytes,
        IReadOnlyList<LayerDescription> Layers);
}
