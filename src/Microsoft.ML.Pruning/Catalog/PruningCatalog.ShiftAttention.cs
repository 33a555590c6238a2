// Licensed under the MIT license.

using System;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Pruners;
using Microsoft.ML.Pruning.Training;

namespace Microsoft.ML
{
    public static partial class PruningCatalog
    {
        /// <summary>
        /// Creates a <see cref="ShiftAttentionTrainer"/>: trains an image classifier whose 3×3 convolutions are shift
        /// attention layers and returns it compacted to one weight and one shift per channel pair.
        /// </summary>
        /// <param name="catalog">The transforms catalog.</param>
        /// <param name="labelColumnName">The label column, a key type.</param>
        /// <param name="featureColumnName">The image column, <c>Vector&lt;Single, C, H, W&gt;</c>.</param>
        /// <param name="architecture">VggSmall or ResNet20.</param>
        /// <param name="layerKind"><see cref="ConvolutionKind.ShiftAttention"/> or <see cref="ConvolutionKind.ShiftAttentionShared"/>.</param>
        /// <param name="epochs">Passes over the training data.</param>
        /// <example>
        /// <code>
        /// var pipeline = mlContext.Transforms.Conversion.MapValueToKey("Label")
        ///     .Append(mlContext.Transforms.PruneAttention(architecture: ImageClassifierArchitecture.VggSmall, epochs: 10))
        ///     .Append(mlContext.Transforms.Conversion.MapKeyToValue("PredictedLabel"));
        /// </code>
        /// </example>
        public static ShiftAttentionTrainer PruneAttention(
            this TransformsCatalog catalog,
            string labelColumnName = Microsoft.ML.Pruning.DefaultColumnNames.Label,
            string featureColumnName = Microsoft.ML.Pruning.DefaultColumnNames.Features,
            ImageClassifierArchitecture architecture = ImageClassifierArchitecture.VggSmall,
            ConvolutionKind layerKind = ConvolutionKind.ShiftAttention,
            int epochs = 10)
            => PruneAttention(catalog, new ShiftAttentionTrainer.Options
            {
                Training = new ImageClassifierTrainer.Options
                {
                    LabelColumnName = labelColumnName,
                    FeatureColumnName = featureColumnName,
                    Architecture = architecture,
                    Epochs = epochs,
                },
                LayerKind = layerKind,
            });

        /// <summary>Creates a <see cref="ShiftAttentionTrainer"/> with advanced options.</summary>
        /// <param name="catalog">The transforms catalog.</param>
        /// <param name="options">The options; validated here.</param>
        public static ShiftAttentionTrainer PruneAttention(this TransformsCatalog catalog, ShiftAttentionTrainer.Options options)
        {
            ArgumentNullException.ThrowIfNull(catalog);
            ArgumentNullException.ThrowIfNull(options);
            return new ShiftAttentionTrainer(MLNetInternals.GetEnvironment(catalog), options);
        }
    }
}
