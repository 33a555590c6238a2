// Licensed under the MIT license.

using System;
using Microsoft.ML.Data;

namespace FashionMnistClassifier
{
    /// <summary>One image to classify, with the columns of <c>FashionMnist.LoadTest</c>.</summary>
    public sealed class ModelInput
    {
        /// <summary>The true class name; the pipeline's first step (MapValueToKey) needs the column, its value is not used to predict.</summary>
        [ColumnName("Label")]
        public string Label { get; set; } = "";

        /// <summary>The 28×28 gray image, channels first, pixels scaled to 0..1.</summary>
        [ColumnName("Features")]
        [VectorType(1, 28, 28)]
        public float[] Features { get; set; } = Array.Empty<float>();
    }
}
