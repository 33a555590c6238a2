// Licensed under the MIT license.

namespace Microsoft.ML.Pruning
{
    /// <summary>ML.NET's conventional column names (its own constants are internal).</summary>
    public static class DefaultColumnNames
    {
        /// <summary>The label column.</summary>
        public const string Label = "Label";

        /// <summary>The feature column.</summary>
        public const string Features = "Features";

        /// <summary>The score column.</summary>
        public const string Score = "Score";

        /// <summary>The predicted-label column.</summary>
        public const string PredictedLabel = "PredictedLabel";
    }
}
