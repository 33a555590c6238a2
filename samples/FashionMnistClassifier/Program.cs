// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Pruning.Data;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Training;
using Microsoft.ML.Transforms;
using Microsoft.ML.Pruning.Runtime;
using Spectre.Console;

namespace FashionMnistClassifier
{
    /// <summary>
    /// Trains a TorchSharp image classifier on Fashion-MNIST inside an ML.NET pipeline, evaluates it, saves it,
    /// reloads it in a new <see cref="MLContext"/> and predicts with a <see cref="PredictionEngine{TSrc, TDst}"/>.
    /// </summary>
    internal static class Program
    {
        /// <summary>Test images predicted one by one with the reloaded model.</summary>
        private const int PreviewCount = 8;

        private static int Main(string[] args)
        {
            // First, before libtorch allocates anything: keep freed memory in the heap (see GlibcMallocTuning).
            bool mallocTuned = GlibcMallocTuning.Apply();

            SampleOptions options;
            try
            {
                options = SampleOptions.Parse(args);
            }
            catch (FormatException ex)
            {
                AnsiConsole.MarkupLineInterpolated($"[red]{ex.Message}[/]");
                Console.WriteLine(SampleOptions.Usage);
                return 1;
            }
            if (options.ShowHelp)
            {
                Console.WriteLine(SampleOptions.Usage);
                return 0;
            }

            AnsiConsole.Write(new Rule("[bold]Fashion-MNIST image classifier[/]").LeftJustified());
            AnsiConsole.MarkupLineInterpolated(
                $"torch threads: {TorchSharp.torch.get_num_threads()}, glibc malloc tuned: {(mallocTuned ? "yes" : "no")}");
            return Run(options);
        }

        private static int Run(SampleOptions options)
        {
            var total = Stopwatch.StartNew();
            var timings = new List<(string Step, TimeSpan Elapsed)>();
            var mlContext = new MLContext(seed: 1);

            // 1. Load the data: columns Label (the class name) and Features (Vector<Single, 1, 28, 28>, 0..1).
            var step = Stopwatch.StartNew();
            IDataView train, test;
            try
            {
                train = FashionMnist.LoadTrain(mlContext, directory: options.DataDirectory);
                test = FashionMnist.LoadTest(mlContext, directory: options.DataDirectory);
            }
            catch (Exception ex) when (ex is FileNotFoundException or InvalidDataException)
            {
                AnsiConsole.MarkupLineInterpolated($"[red]{ex.Message}[/]");
                return 1;
            }
            timings.Add(("Load data", step.Elapsed));
            AnsiConsole.MarkupLineInterpolated(
                $"Loaded {train.GetRowCount():N0} training and {test.GetRowCount():N0} test images in {step.Elapsed.TotalSeconds:F1} s.");

            // 2. Train.
            AnsiConsole.Write(new Rule("Training").LeftJustified());
            step.Restart();
            using TransformerChain<KeyToValueMappingTransformer> model = Train(mlContext, train, test, options);
            timings.Add(("Train", step.Elapsed));

            // 3. Evaluate on the 10,000 test images.
            AnsiConsole.Write(new Rule("Evaluation on the test set").LeftJustified());
            step.Restart();
            MulticlassClassificationMetrics metrics = mlContext.MulticlassClassification.Evaluate(model.Transform(test));
            timings.Add(("Evaluate", step.Elapsed));
            var metricsTable = new Table()
                .AddColumn("Metric")
                .AddColumn(new TableColumn("Value").RightAligned())
                .AddRow("Micro accuracy", metrics.MicroAccuracy.ToString("P2", CultureInfo.InvariantCulture))
                .AddRow("Macro accuracy", metrics.MacroAccuracy.ToString("P2", CultureInfo.InvariantCulture))
                .AddRow("Log-loss", metrics.LogLoss.ToString("F4", CultureInfo.InvariantCulture))
                .AddRow("Log-loss reduction", metrics.LogLossReduction.ToString("F4", CultureInfo.InvariantCulture));
            AnsiConsole.Write(metricsTable);
            // Pre-formatted tables go to Console directly: AnsiConsole would re-wrap them at the terminal width.
            Console.WriteLine(metrics.ConfusionMatrix.GetFormattedConfusionTable());

            // 4. Save the model with the input schema, as Model Builder does.
            AnsiConsole.Write(new Rule("Save, reload and predict").LeftJustified());
            string path = Path.GetFullPath(options.OutputPath);
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            step.Restart();
            mlContext.Model.Save(model, train.Schema, path);
            timings.Add(("Save", step.Elapsed));
            AnsiConsole.MarkupLineInterpolated($"Saved [bold]{path}[/] ({new FileInfo(path).Length / 1024.0:N1} KB).");

            // 5. Reload it in a new MLContext, as a scoring application would, and predict a few test images.
            step.Restart();
            bool consistent = PredictWithReloadedModel(mlContext, model, test, path);
            timings.Add(("Reload and predict", step.Elapsed));

            // 6. The trained network: layers, parameters and multiply-accumulates.
            AnsiConsole.Write(new Rule("Model summary").LeftJustified());
            ImageClassificationTransformer classifier = model.OfType<ImageClassificationTransformer>().Single();
            Console.WriteLine(classifier.GetSummary());
            AnsiConsole.MarkupLineInterpolated($"Classes in key order: {string.Join(", ", classifier.ClassNames)}");

            AnsiConsole.Write(new Rule("Timings").LeftJustified());
            var timingTable = new Table().AddColumn("Step").AddColumn(new TableColumn("Seconds").RightAligned());
            foreach (var (name, elapsed) in timings)
                timingTable.AddRow(name, elapsed.TotalSeconds.ToString("F1", CultureInfo.InvariantCulture));
            timingTable.AddRow("[bold]Total[/]", $"[bold]{total.Elapsed.TotalSeconds.ToString("F1", CultureInfo.InvariantCulture)}[/]");
            AnsiConsole.Write(timingTable);
            return consistent ? 0 : 1;
        }

        /// <summary>
        /// The Model Builder pipeline: class name → key, train the network, predicted key → class name.
        /// A progress bar advances after every epoch.
        /// </summary>
        private static TransformerChain<KeyToValueMappingTransformer> Train(MLContext mlContext, IDataView train, IDataView test,
            SampleOptions options)
        {
            // Every other setting keeps the library default (SGD with Nesterov momentum, cosine schedule, batch 128).
            var trainerOptions = new ImageClassifierTrainer.Options
            {
                Architecture = options.Architecture,
                Epochs = options.Epochs,
            };
            AnsiConsole.MarkupLineInterpolated(
                $"{trainerOptions.Architecture}, {trainerOptions.Epochs} epoch(s), batch {trainerOptions.BatchSize}, {trainerOptions.Optimizer} with learning rate {trainerOptions.LearningRate} ({trainerOptions.LearningRateSchedule} schedule)");

            var labelToKey = mlContext.Transforms.Conversion.MapValueToKey("Label",
                keyOrdinality: ValueToKeyMappingEstimator.KeyOrdinality.ByValue);
            // The trainer reads the validation set directly, not through the pipeline, so it needs the key labels here.
            trainerOptions.ValidationSet = labelToKey.Fit(train).Transform(test);

            return AnsiConsole.Progress()
                .AutoClear(false)
                .Columns(
                    new TaskDescriptionColumn { Alignment = Justify.Left },
                    new ProgressBarColumn(),
                    new PercentageColumn(),
                    new ElapsedTimeColumn(),
                    new RemainingTimeColumn())
                .Start(context =>
                {
                    ProgressTask progress = context.AddTask($"epoch 0/{trainerOptions.Epochs}", maxValue: trainerOptions.Epochs);
                    trainerOptions.EpochCompleted = epoch =>
                    {
                        AnsiConsole.MarkupLineInterpolated($"[grey]{epoch}[/]");
                        progress.Description = Markup.Escape(FormattableString.Invariant(
                            $"epoch {epoch.Epoch}/{epoch.Epochs}: loss {epoch.Loss:F3}, accuracy {epoch.ValidationAccuracy ?? epoch.TrainingAccuracy:P1}, {epoch.ImagesPerSecond:N0} images/s"));
                        progress.Increment(1);
                    };

                    var pipeline = labelToKey
                        .Append(mlContext.MulticlassClassification.Trainers.ImageClassifier(trainerOptions))
                        .Append(mlContext.Transforms.Conversion.MapKeyToValue("PredictedLabel"));
                    return pipeline.Fit(train);
                });
        }

        /// <summary>
        /// Loads the saved model in a new <see cref="MLContext"/>, predicts the first test images with a
        /// <see cref="PredictionEngine{TSrc, TDst}"/> and checks the predictions against the in-memory model's.
        /// </summary>
        /// <returns>True when both models predict the same labels and scores.</returns>
        private static bool PredictWithReloadedModel(MLContext mlContext, ITransformer model, IDataView test, string path)
        {
            ModelInput[] images = mlContext.Data.CreateEnumerable<ModelInput>(test, reuseRowObject: false).Take(PreviewCount).ToArray();
            ModelOutput[] expected = mlContext.Data.CreateEnumerable<ModelOutput>(model.Transform(test), reuseRowObject: false)
                .Take(PreviewCount).ToArray();

            var inferenceContext = new MLContext(seed: 1);
            ITransformer loaded = inferenceContext.Model.Load(path, out DataViewSchema _);
            try
            {
                using PredictionEngine<ModelInput, ModelOutput> engine =
                    inferenceContext.Model.CreatePredictionEngine<ModelInput, ModelOutput>(loaded);

                var table = new Table()
                    .AddColumn(new TableColumn("#").RightAligned())
                    .AddColumn("True label")
                    .AddColumn("Predicted label")
                    .AddColumn(new TableColumn("Probability").RightAligned());
                bool sameLabels = true;
                float maxDifference = 0;
                for (int i = 0; i < images.Length; i++)
                {
                    ModelOutput prediction = engine.Predict(images[i]);
                    sameLabels &= prediction.PredictedLabel == expected[i].PredictedLabel;
                    maxDifference = Math.Max(maxDifference, prediction.Score.Zip(expected[i].Score, (a, b) => Math.Abs(a - b)).Max());

                    string color = prediction.PredictedLabel == images[i].Label ? "green" : "red";
                    table.AddRow(
                        i.ToString(CultureInfo.InvariantCulture),
                        Markup.Escape(images[i].Label),
                        $"[{color}]{Markup.Escape(prediction.PredictedLabel)}[/]",
                        prediction.Score.Max().ToString("P1", CultureInfo.InvariantCulture));
                }
                AnsiConsole.Write(table);

                bool consistent = sameLabels && maxDifference <= 1e-6f;
                if (consistent)
                {
                    AnsiConsole.MarkupLineInterpolated(
                        $"[green]The reloaded model predicts as the in-memory model[/] on these {images.Length} images (largest score difference {maxDifference:G3}).");
                }
                else
                {
                    AnsiConsole.MarkupLineInterpolated(
                        $"[red]The reloaded model disagrees with the in-memory model[/] (same labels: {sameLabels}, largest score difference {maxDifference:G3}).");
                }
                return consistent;
            }
            finally
            {
                (loaded as IDisposable)?.Dispose();
            }
        }
    }
}
