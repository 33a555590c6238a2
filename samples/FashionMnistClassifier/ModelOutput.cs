// Licensed under the MIT license.

using System;
using Microsoft.ML.Data;

namespace FashionMnistClassifier
{
    /// <summary>The prediction for one image.</summary>
    public sealed class ModelOutput
    {
        /// <summary>The most probable class name.</summary>
        [ColumnName("PredictedLabel")]
        public string PredictedLabel { get; set; } = "";

        /// <summary>The probability of each class, in the model's class (key) order.</summary>
        [ColumnName("Score")]
        public float[] Score { get; set; } = Array.Empty<float>();
    }
}
