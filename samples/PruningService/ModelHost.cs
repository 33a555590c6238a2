// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.Extensions.ObjectPool;
using Microsoft.Extensions.Options;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Pruning.Data;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Reports;
using Microsoft.ML.Transforms.Image;
using SkiaSharp;

namespace PruningService
{
    /// <summary>The model zip named by <c>Model:Path</c> could not be served; the message says why.</summary>
    public sealed class ModelLoadException : Exception
    {
        /// <summary>Creates the exception.</summary>
        public ModelLoadException(string message, Exception? inner = null) : base(message, inner)
        {
        }
    }

    /// <summary>An image that the service does not score; the message says why. Answered with 400.</summary>
    public sealed class ImageRejectedException : Exception
    {
        /// <summary>Creates the exception.</summary>
        public ImageRejectedException(string message) : base(message)
        {
        }
    }

    /// <summary>
    /// The served model: loaded once from <c>Model:Path</c>, scored through a pool of prediction engines (a
    /// <see cref="PredictionEngine{TSrc, TDst}"/> serves one thread at a time; the pool gives each request its own).
    /// </summary>
    /// <remarks>
    /// Images go through the library's own image steps for the model's input
    /// (<c>mlContext.Transforms.LoadImagePixels(model)</c>: resize → grayscale for a one-channel model → extract pixels
    /// scaled to 0..1), less the first one, which reads files: here the decoded image comes from the request. Then the
    /// model's image classifier scores them, so a PNG posted here gets the scores that the library's pipeline gives the
    /// same file.
    /// </remarks>
    public sealed class ModelHost : IDisposable
    {
        private readonly MLContext _ml = new(seed: 1);
        private readonly ITransformer _model;
        private readonly ImageClassificationTransformer _classifier;
        private readonly ObjectPool<PredictionEngine<ImageInput, ImageScores>> _engines;
        private readonly PredictOptions _options;

        /// <summary>Loads the model named by <paramref name="model"/>.</summary>
        /// <exception cref="ModelLoadException">No path is configured, the file is missing, or it is not a model of this
        /// library whose images can be read from image files.</exception>
        public ModelHost(IOptions<ModelOptions> model, IOptions<PredictOptions> predict)
        {
            _options = predict.Value;
            if (_options.MaxImageBytes <= 0 || _options.MaxImagesPerRequest <= 0 || _options.MaxImageSide <= 0 || _options.EnginePoolSize < 0)
            {
                throw new ModelLoadException(
                    "Predict:MaxImageBytes, Predict:MaxImagesPerRequest and Predict:MaxImageSide must be positive, Predict:EnginePoolSize 0 or more.");
            }
            string configured = model.Value.Path;
            if (string.IsNullOrWhiteSpace(configured))
            {
                throw new ModelLoadException(
                    "No model to serve: set Model:Path to a model zip saved with mlContext.Model.Save (in appsettings.json, as --Model:Path=model.zip, or in the environment variable Model__Path).");
            }
            ModelPath = System.IO.Path.GetFullPath(configured);
            if (!File.Exists(ModelPath))
                throw new ModelLoadException($"Model:Path '{ModelPath}' does not exist.");
            ZipBytes = new FileInfo(ModelPath).Length;

            try
            {
                // LoadChecked: the zip, its CRC-32s and ML.NET's headers are checked first, so a damaged file is refused
                // with a message naming the entry and field.
                _model = _ml.Model.LoadChecked(ModelPath, out _);
            }
            catch (Exception ex) when (ex is not OutOfMemoryException)
            {
                string reason = ex is FormatException ? ex.Message : Innermost(ex).Message;
                throw new ModelLoadException($"Model:Path '{ModelPath}' is not a model zip this service can load: {reason}", ex);
            }

            ITransformer imageSteps;
            IDataView paths;
            try
            {
                _classifier = _model.GetImageClassifier();
                paths = _ml.Data.LoadFromEnumerable(Array.Empty<PathRow>());
                imageSteps = _ml.Transforms.LoadImagePixels(_model).Fit(paths);
            }
            catch (ArgumentException ex)
            {
                DisposeModel();
                throw new ModelLoadException($"Model:Path '{ModelPath}' cannot be served: {ex.Message}", ex);
            }

            // LoadImages → ResizeImages → (ConvertToGrayscale →) ExtractPixels: keep all but the file reader, whose output
            // column the request's decoded image fills.
            ITransformer[] steps = Flatten(imageSteps).ToArray();
            string imageColumn = steps[0].GetOutputSchema(paths.Schema).Single(column => column.Type is ImageDataViewType).Name;
            var scoring = new TransformerChain<ITransformer>(steps.Skip(1).Append(_classifier).ToArray());

            SchemaDefinition input = SchemaDefinition.Create(typeof(ImageInput));
            input[nameof(ImageInput.Image)].ColumnName = imageColumn;
            SchemaDefinition output = SchemaDefinition.Create(typeof(ImageScores), SchemaDefinition.Direction.Read);
            output[nameof(ImageScores.Score)].ColumnName = _classifier.ScoreColumnName;
            output[nameof(ImageScores.PredictedLabel)].ColumnName = _classifier.PredictedLabelColumnName;

            int poolSize = _options.EnginePoolSize > 0 ? _options.EnginePoolSize : 2 * Environment.ProcessorCount;
            // A prediction engine owns the transformer it was made from (disposing one disposes the model), so the pool never
            // disposes them: engines past the pool's size are dropped to the garbage collector, the model lives as long as
            // this host.
            _engines = new DefaultObjectPool<PredictionEngine<ImageInput, ImageScores>>(
                new EnginePolicy(() => _ml.Model.CreatePredictionEngine<ImageInput, ImageScores>(scoring, ignoreMissingColumns: true, input, output)), poolSize);

            Input = _classifier.Network.Definition.Input;
            ClassNames = _classifier.ClassNames;
            Summary = _classifier.GetSummary();
            Method = InferMethod(_classifier.Network.Definition, Summary);
        }

        /// <summary>The full path of the model zip served.</summary>
        public string ModelPath { get; }

        /// <summary>The size of the model zip in bytes.</summary>
        public long ZipBytes { get; }

        /// <summary>The image shape the model takes.</summary>
        public ImageShape Input { get; }

        /// <summary>The class names, in the order of the scores.</summary>
        public IReadOnlyList<string> ClassNames { get; }

        /// <summary>The library's summary of the model.</summary>
        public ModelSummary Summary { get; }

        /// <summary>What the stored network shows of how it was made (see <see cref="ModelDescription.Method"/>).</summary>
        public string Method { get; }

        /// <summary>The summary as <c>GET /model</c> answers it.</summary>
        public ModelDescription Describe() => new(ModelPath, Summary.Architecture, Method, Input.ToString(), ClassNames, Summary.Parameters,
            Summary.NonZeroParameters, Summary.MultiplyAccumulates, Summary.NonZeroMultiplyAccumulates, Summary.SerializedBytes, ZipBytes,
            Summary.Layers.Where(l => l.Parameters > 0 || l.MultiplyAccumulates > 0)
                .Select(l => new LayerDescription(l.Path, l.Kind, l.Parameters, l.NonZeroParameters, l.MultiplyAccumulates)).ToArray());

        /// <summary>Scores one encoded image (PNG or JPEG).</summary>
        /// <param name="encoded">The file's bytes.</param>
        /// <param name="file">The form file name, or null for a raw body.</param>
        /// <exception cref="ImageRejectedException">The bytes are empty, too many, not a PNG or JPEG image, too large an
        /// image, or of another size than the model's with resizing turned off.</exception>
        public ImagePrediction Predict(byte[] encoded, string? file = null)
        {
            ArgumentNullException.ThrowIfNull(encoded);
            string what = file is null ? "The request body" : $"File '{file}'";
            if (encoded.Length == 0)
                throw new ImageRejectedException($"{what} is empty: send the bytes of a PNG or JPEG image.");
            if (encoded.Length > _options.MaxImageBytes)
                throw new ImageRejectedException(FormattableString.Invariant($"{what} is {encoded.Length:N0} bytes; the limit is {_options.MaxImageBytes:N0} bytes (Predict:MaxImageBytes)."));

            string format;
            int width, height;
            using (SKData data = SKData.CreateCopy(encoded))
            using (SKCodec? codec = SKCodec.Create(data))
            {
                format = codec?.EncodedFormat switch
                {
                    SKEncodedImageFormat.Png => "png",
                    SKEncodedImageFormat.Jpeg => "jpeg",
                    null => throw new ImageRejectedException($"{what} is not a PNG or JPEG image."),
                    SKEncodedImageFormat other => throw new ImageRejectedException($"{what} is a {other.ToString().ToUpperInvariant()} image; the service takes PNG or JPEG."),
                };
                (width, height) = (codec!.Info.Width, codec.Info.Height);
                if (width > _options.MaxImageSide || height > _options.MaxImageSide)
                    throw new ImageRejectedException($"{what} is {width}x{height} pixels; the limit is {_options.MaxImageSide} pixels a side (Predict:MaxImageSide).");
                // The decoder that MLImage uses fills what a cut or damaged file lacks with blank pixels; the codec says so.
                var info = new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
                using var pixels = new SKBitmap(info);
                SKCodecResult result = codec.GetPixels(info, pixels.GetPixels());
                if (result != SKCodecResult.Success)
                    throw new ImageRejectedException($"{what} could not be decoded as {format.ToUpperInvariant()}: {Describe(result)}.");
            }
            bool resized = width != Input.Width || height != Input.Height;
            if (resized && !_options.ResizeImages)
            {
                throw new ImageRejectedException(
                    $"{what} is {width}x{height} pixels; the model takes {Input.Width}x{Input.Height} images (Predict:ResizeImages is off).");
            }

            MLImage image;
            try
            {
                using var stream = new MemoryStream(encoded, writable: false);
                image = MLImage.CreateFromStream(stream);
            }
            catch (Exception ex) when (ex is not OutOfMemoryException)
            {
                throw new ImageRejectedException($"{what} could not be decoded as {format.ToUpperInvariant()}: {ex.Message}");
            }

            ImageScores scores;
            PredictionEngine<ImageInput, ImageScores> engine = _engines.Get();
            try
            {
                // The image steps may pass an image of the model's size through as it is and dispose it when the engine
                // scores its next image, so it is disposed here while the engine is still this request's alone.
                using (image)
                    scores = engine.Predict(new ImageInput { Image = image });
            }
            finally
            {
                _engines.Return(engine);
            }
            int best = (int)scores.PredictedLabel - 1;
            var all = new ClassScore[scores.Score.Length];
            for (int i = 0; i < all.Length; i++)
                all[i] = new ClassScore(ClassNames[i], scores.Score[i]);
            return new ImagePrediction(file, ClassNames[best], scores.Score[best], all, new ImageDescription(format, width, height, resized));
        }

        /// <inheritdoc/>
        public void Dispose()
        {
            DisposeModel();
        }

        private void DisposeModel()
        {
            if (_model is IEnumerable<ITransformer> chain)
            {
                foreach (ITransformer part in chain)
                    (part as IDisposable)?.Dispose();
            }
            (_model as IDisposable)?.Dispose();
        }

        /// <summary>
        /// Tells from the stored network how it was made: compact shift layers, weights stored as zeros, or fewer channels
        /// or units than the architecture it names.
        /// </summary>
        internal static string InferMethod(NetworkDefinition definition, ModelSummary summary)
        {
            LayerDefinition[] layers = definition.Flatten().Select(site => site.Layer).ToArray();
            if (layers.Any(l => l is ShiftPointwiseConv2dLayer or ShiftAttentionConv2dLayer))
                return "shift-attention";
            if (layers.Any(l => l is ShiftConv2dLayer))
                return "shift";
            if (summary.NonZeroParameters < summary.Parameters)
                return "sparse";
            ImageClassifierArchitecture? architecture = Enum.GetValues<ImageClassifierArchitecture>()
                .Cast<ImageClassifierArchitecture?>().FirstOrDefault(a => Architectures.ShortName(a!.Value) == definition.Architecture);
            if (architecture is not null)
            {
                int[] stock = Widths(Architectures.Create(architecture.Value, definition.Input, definition.Classes).Flatten().Select(site => site.Layer));
                int[] served = Widths(layers);
                if (stock.Length == served.Length && served.Zip(stock).Any(pair => pair.First < pair.Second))
                    return "channels";
            }
            return "dense";
        }

        private static IEnumerable<ITransformer> Flatten(ITransformer transformer)
            => transformer is IEnumerable<ITransformer> chain ? chain.SelectMany(Flatten) : new[] { transformer };

        private static int[] Widths(IEnumerable<LayerDefinition> layers) => layers
            .Select(l => l switch { Conv2dLayer c => c.OutChannels, LinearLayer f => f.OutFeatures, _ => -1 })
            .Where(width => width >= 0).ToArray();

        private static string Describe(SKCodecResult result) => result switch
        {
            SKCodecResult.IncompleteInput => "the data ends before the image does",
            SKCodecResult.ErrorInInput => "the data is damaged",
            _ => result.ToString(),
        };

        private static Exception Innermost(Exception ex)
        {
            while (ex.InnerException is not null)
                ex = ex.InnerException;
            return ex;
        }

        /// <summary>The input row of the prediction engines: one decoded image.</summary>
        internal sealed class ImageInput
        {
            // The attribute registers MLImage with ML.NET's type system, which needs a size; the resize step that reads the
            // column takes the image's own size, whatever the column type says.
            [ImageType(1, 1)]
            public MLImage? Image { get; set; }
        }

        /// <summary>The output row of the prediction engines.</summary>
        internal sealed class ImageScores
        {
            public float[] Score { get; set; } = Array.Empty<float>();

            public uint PredictedLabel { get; set; }
        }

        /// <summary>The schema the image steps are fitted on.</summary>
        private sealed class PathRow
        {
            public string ImagePath { get; set; } = "";
        }

        private sealed class EnginePolicy : PooledObjectPolicy<PredictionEngine<ImageInput, ImageScores>>
        {
            private readonly Func<PredictionEngine<ImageInput, ImageScores>> _create;

            public EnginePolicy(Func<PredictionEngine<ImageInput, ImageScores>> create) => _create = create;

            public override PredictionEngine<ImageInput, ImageScores> Create() => _create();

            public override bool Return(PredictionEngine<ImageInput, ImageScores> obj) => true;
        }
    }
}
