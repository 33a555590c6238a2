// Licensed under the MIT license.

using System;

namespace Microsoft.ML.Pruning.Data
{
    /// <summary>Gray-scale images read from an IDX file: <see cref="Count"/> images of <see cref="Height"/>×<see cref="Width"/> bytes.</summary>
    public sealed class IdxImages
    {
        /// <summary>Wraps <paramref name="pixels"/> (not copied), which must hold exactly <paramref name="count"/> images.</summary>
        /// <param name="count">Number of images.</param>
        /// <param name="height">Rows per image.</param>
        /// <param name="width">Columns per image.</param>
        /// <param name="pixels">The pixels, image after image, each row-major.</param>
        public IdxImages(int count, int height, int width, byte[] pixels)
        {
            ArgumentNullException.ThrowIfNull(pixels);
            ArgumentOutOfRangeException.ThrowIfNegative(count);
            ArgumentOutOfRangeException.ThrowIfNegativeOrZero(height);
            ArgumentOutOfRangeException.ThrowIfNegativeOrZero(width);
            if ((long)count * height * width != pixels.LongLength)
                throw new ArgumentException($"{count} images of {height}x{width} pixels need {(long)count * height * width} bytes, but {pixels.Length} were given.", nameof(pixels));
            Count = count;
            Height = height;
            Width = width;
            Pixels = pixels;
        }

        /// <summary>Number of images.</summary>
        public int Count { get; }

        /// <summary>Rows per image.</summary>
        public int Height { get; }

        /// <summary>Columns per image.</summary>
        public int Width { get; }

        /// <summary>Pixels per image (<see cref="Height"/> × <see cref="Width"/>).</summary>
        public int PixelsPerImage => Height * Width;

        /// <summary>All pixels, image after image, each image row-major (index = (image·Height + row)·Width + column).</summary>
        public byte[] Pixels { get; }

        /// <summary>The pixels of image <paramref name="index"/>, row-major.</summary>
        public ReadOnlySpan<byte> GetImage(int index)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(index);
            ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, Count);
            return Pixels.AsSpan(index * PixelsPerImage, PixelsPerImage);
        }
    }
}
