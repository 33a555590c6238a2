// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms;

namespace Microsoft.ML.Pruning.Tests
{
    /// <summary>One row of a synthetic image data set.</summary>
    public sealed class ImageRow
    {
        /// <summary>The class name.</summary>
        public string Label { get; set; } = "";

        /// <summary>Pixels, channels first.</summary>
        public float[] Features { get; set; } = Array.Empty<float>();
    }

    /// <summary>
    /// Small, learnable image data sets made in memory: each class lights a different block of the image, plus
    /// noise. A few epochs separate them, so tests stay fast and do not need the real data set.
    /// </summary>
    internal static class SyntheticImages
    {
        public static readonly string[] ClassNames = { "ankle", "bag", "coat", "dress" };

        public static List<ImageRow> Rows(int count, int channels = 1, int height = 12, int width = 12, int seed = 0)
        {
            var random = new Random(seed);
            var rows = new List<ImageRow>(count);
            for (int i = 0; i < count; i++)
            {
                int label = i % ClassNames.Length;
                var pixels = new float[channels * height * width];
                for (int p = 0; p < pixels.Length; p++)
                    pixels[p] = (float)(random.NextDouble() * 0.3);
                int top = label / 2 * (height / 2), left = label % 2 * (width / 2);
                for (int c = 0; c < channels; c++)
                    for (int y = top; y < top + height / 2; y++)
                        for (int x = left; x < left + width / 2; x++)
                            pixels[(c * height + y) * width + x] += 0.7f;
                rows.Add(new ImageRow { Label = ClassNames[label], Features = pixels });
            }
            return rows;
        }

        /// <summary>An IDataView whose Features column is <c>Vector&lt;Single, C, H, W&gt;</c>, as ExtractPixels makes it.</summary>
        public static IDataView Load(MLContext ml, IEnumerable<ImageRow> rows, int channels = 1, int height = 12, int width = 12)
        {
            SchemaDefinition schema = SchemaDefinition.Create(typeof(ImageRow));
            schema[nameof(ImageRow.Features)].ColumnType = new VectorDataViewType(NumberDataViewType.Single, channels, height, width);
            return ml.Data.LoadFromEnumerable(rows, schema);
        }

        public static IDataView Load(MLContext ml, int count, int channels = 1, int height = 12, int width = 12, int seed = 0)
            => Load(ml, Rows(count, channels, height, width, seed), channels, height, width);

        /// <summary>MapValueToKey on the label (by value, so the key order does not depend on row order).</summary>
        public static IEstimator<ITransformer> MapLabel(MLContext ml)
            => ml.Transforms.Conversion.MapValueToKey("Label", keyOrdinality: ValueToKeyMappingEstimator.KeyOrdinality.ByValue);
    }
}
