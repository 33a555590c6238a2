// Licensed under the MIT license.

using System;

namespace Microsoft.ML.Pruning.Networks
{
    /// <summary>The shape of one input image, channels first (the layout of ImageAnalytics' <c>ExtractPixels</c>).</summary>
    /// <param name="Channels">Number of channels (1 for gray, 3 for RGB).</param>
    /// <param name="Height">Height in pixels.</param>
    /// <param name="Width">Width in pixels.</param>
    public readonly record struct ImageShape(int Channels, int Height, int Width)
    {
        /// <summary>Number of values in one image.</summary>
        public int Size => checked(Channels * Height * Width);

        /// <summary>Throws when any dimension is not positive.</summary>
        public void Validate()
        {
            if (Channels < 1 || Height < 1 || Width < 1)
                throw new ArgumentException($"Image shape {this} must have positive channels, height and width.");
        }

        /// <inheritdoc/>
        public override string ToString() => $"{Channels}x{Height}x{Width}";
    }
}
