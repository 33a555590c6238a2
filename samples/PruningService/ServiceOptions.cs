// Licensed under the MIT license.

namespace PruningService
{
    /// <summary>The <c>Model</c> section of the configuration.</summary>
    public sealed class ModelOptions
    {
        /// <summary>The configuration section.</summary>
        public const string Section = "Model";

        /// <summary>The saved model zip (<c>mlContext.Model.Save</c>) to serve. Required.</summary>
        public string Path { get; set; } = "";
    }

    /// <summary>The <c>Predict</c> section of the configuration: what <c>POST /predict</c> accepts.</summary>
    public sealed class PredictOptions
    {
        /// <summary>The configuration section.</summary>
        public const string Section = "Predict";

        /// <summary>The largest image, in bytes, and the largest raw request body. Default 1 MiB.</summary>
        public int MaxImageBytes { get; set; } = 1 << 20;

        /// <summary>The most images one multipart request may carry. Default 64.</summary>
        public int MaxImagesPerRequest { get; set; } = 64;

        /// <summary>The largest width or height of an image, checked before it is decoded. Default 2048.</summary>
        public int MaxImageSide { get; set; } = 2048;

        /// <summary>
        /// True (default): images of another size are resized to the model's input, as the library's
        /// <c>LoadImagePixels</c> does, and the response says so. False: they are refused.
        /// </summary>
        public bool ResizeImages { get; set; } = true;

        /// <summary>How many prediction engines the pool keeps; 0 (default) keeps two per processor.</summary>
        public int EnginePoolSize { get; set; }
    }
}
