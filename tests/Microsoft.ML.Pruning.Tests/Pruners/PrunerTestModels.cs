// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Training;

namespace Microsoft.ML.Pruning.Tests.Pruners
{
    /// <summary>Small trained models on synthetic images for the pruner tests.</summary>
    internal static class PrunerTestModels
    {
        /// <summary>MapValueToKey → ImageClassifier → MapKeyToValue, trained on <paramref name="train"/>.</summary>
        public static ITransformer Train(MLContext ml, IDataView train, ImageClassifierArchitecture architecture, int epochs = 3)
        {
            var options = new ImageClassifierTrainer.Options { Architecture = architecture, Epochs = epochs, BatchSize = 32 };
            return SyntheticImages.MapLabel(ml)
                .Append(ml.MulticlassClassification.Trainers.ImageClassifier(options))
                .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"))
                .Fit(train);
        }

        public static ImageClassificationTransformer Classifier(ITransformer model)
            => model as ImageClassificationTransformer ?? ((IEnumerable<ITransformer>)model).OfType<ImageClassificationTransformer>().Single();

        public static Dictionary<string, float[]> Weights(ITransformer model)
            => Classifier(model).Network.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter.data<float>().ToArray());

        public static double Accuracy(MLContext ml, ITransformer model, IDataView test)
        {
            IDataView scored = model.Transform(test);
            string[] predicted = scored.GetColumn<string>("PredictedLabel").ToArray();
            string[] labels = test.GetColumn<string>("Label").ToArray();
            return predicted.Zip(labels).Count(p => p.First == p.Second) / (double)labels.Length;
        }

        public static string TempZip() => Path.Combine(Path.GetTempPath(), "pruning-" + Guid.NewGuid().ToString("N") + ".zip");

        public static void DisposeAll(ITransformer model)
        {
            if (model is IEnumerable<ITransformer> chain)
            {
                foreach (var part in chain)
                    (part as IDisposable)?.Dispose();
            }
            (model as IDisposable)?.Dispose();
        }
    }
}
