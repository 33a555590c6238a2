// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Threading;
using Microsoft.ML.Data;
using Microsoft.ML.Pruning.Native;
using Microsoft.ML.Pruning.Networks;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Training
{
    /// <summary>
    /// Images and labels of an <see cref="IDataView"/>, read once into two CPU tensors: [N,C,H,W] float32 and
    /// [N] int64 class indices (0-based; ML.NET keys are 1-based). Reading once and batching with
    /// <c>index_select</c> keeps the training loop as fast as a bare TorchSharp loop.
    /// </summary>
    internal sealed class ImageDataset : IDisposable
    {
        private ImageDataset(Tensor images, Tensor labels, ImageShape shape)
        {
            Images = images;
            Labels = labels;
            Shape = shape;
        }

        public Tensor Images { get; }

        public Tensor Labels { get; }

        public ImageShape Shape { get; }

        public long Count => Images.shape[0];

        /// <summary>The image shape a feature column carries: [C,H,W], [H,W] (one channel), or <paramref name="declared"/> for flat vectors.</summary>
        public static ImageShape ShapeOf(DataViewSchema.Column column, ImageShape? declared)
        {
            if (column.Type is not VectorDataViewType vector || vector.ItemType != NumberDataViewType.Single || !vector.IsKnownSize)
            {
                throw new ArgumentException(
                    $"Feature column '{column.Name}' must be a known-size vector of Single (e.g. from ExtractPixels or LoadFromIdx); found {column.Type}.");
            }
            ImageShape shape;
            if (declared is ImageShape d)
                shape = d;
            else if (vector.Dimensions.Length == 3)
                shape = new ImageShape(vector.Dimensions[0], vector.Dimensions[1], vector.Dimensions[2]);
            else if (vector.Dimensions.Length == 2)
                shape = new ImageShape(1, vector.Dimensions[0], vector.Dimensions[1]);
            else
            {
                throw new ArgumentException(
                    $"Feature column '{column.Name}' is {column.Type}: a flat vector does not say the image's channels, height and width. " +
                    "Produce it with ExtractPixels/LoadFromIdx (Vector<Single, C, H, W>) or set Options.ImageShape.");
            }
            if (shape.Size != vector.Size)
                throw new ArgumentException($"Feature column '{column.Name}' has {vector.Size} values per row, but the image shape {shape} needs {shape.Size}.");
            return shape;
        }

        /// <summary>Reads every row. Throws on an empty view, a non-finite pixel or a missing label, naming the row.</summary>
        /// <param name="data">The rows.</param>
        /// <param name="featureColumnName">The image column.</param>
        /// <param name="labelColumnName">The label column: a key of <paramref name="classes"/> values, or (when
        /// <paramref name="classNames"/> is given) any scalar whose text is one of the class names. Null reads no labels
        /// (<see cref="Labels"/> is then all -1).</param>
        /// <param name="shape">The image shape.</param>
        /// <param name="classes">The number of classes.</param>
        /// <param name="dataName">What the data is called in error messages.</param>
        /// <param name="cancellationToken">Checked every 1024 rows.</param>
        /// <param name="classNames">The class names in key order, for labels given as values rather than keys.</param>
        public static ImageDataset Load(IDataView data, string featureColumnName, string? labelColumnName, ImageShape shape, int classes,
            string dataName, CancellationToken cancellationToken, IReadOnlyList<string>? classNames = null)
        {
            DataViewSchema.Column features = data.Schema[featureColumnName];
            DataViewSchema.Column? label = labelColumnName is null ? null : data.Schema[labelColumnName];
            int size = shape.Size;
            var pixels = new System.Collections.Generic.List<float[]>();
            var labels = new System.Collections.Generic.List<long>();
            const int chunkRows = 4096;
            float[] chunk = new float[chunkRows * size];
            int inChunk = 0;
            long row = 0;

            using (DataViewRowCursor cursor = data.GetRowCursor(label is DataViewSchema.Column l ? new[] { features, l } : new[] { features }))
            {
                ValueGetter<VBuffer<float>> getFeatures = cursor.GetGetter<VBuffer<float>>(features);
                ValueGetter<uint> getLabel = label is not DataViewSchema.Column labelColumn
                    ? (ref uint value) => value = 0
                    : labelColumn.Type is KeyDataViewType || classNames is null
                        ? cursor.GetGetter<uint>(labelColumn)
                        : LabelFromValue(cursor, labelColumn, classNames, dataName);
                VBuffer<float> buffer = default;
                uint key = 0;
                while (cursor.MoveNext())
                {
                    if ((row & 1023) == 0)
                        cancellationToken.ThrowIfCancellationRequested();
                    getFeatures(ref buffer);
                    getLabel(ref key);
                    if (buffer.Length != size)
                        throw new InvalidOperationException($"Row {row} of the {dataName} has {buffer.Length} feature values; expected {size} ({shape}).");
                    if (label is not null && (key == 0 || key > classes))
                        throw new InvalidOperationException($"Row {row} of the {dataName} has a missing label (label key {key}, expected 1..{classes}).");
                    Span<float> target = chunk.AsSpan(inChunk * size, size);
                    buffer.CopyTo(target);
                    foreach (float value in target)
                    {
                        if (!float.IsFinite(value))
                            throw new InvalidOperationException($"Row {row} of the {dataName} has a non-finite feature value ({value}) in column '{featureColumnName}'.");
                    }
                    labels.Add(key - 1);
                    row++;
                    if (++inChunk == chunkRows)
                    {
                        pixels.Add(chunk);
                        chunk = new float[chunkRows * size];
                        inChunk = 0;
                    }
                }
            }
            if (row == 0)
                throw new InvalidOperationException($"The {dataName} has no rows.");

            // One contiguous copy into the tensor, chunk by chunk.
            var all = new float[checked(row * size)];
            int offset = 0;
            foreach (float[] full in pixels)
            {
                full.CopyTo(all, offset);
                offset += full.Length;
            }
            Array.Copy(chunk, 0, all, offset, inChunk * size);
            Tensor images = tensor(all).reshape(row, shape.Channels, shape.Height, shape.Width);
            Tensor labelTensor = label is null ? full(row, HeldScalars.Of(-1L)) : tensor(labels.ToArray());
            return new ImageDataset(images, labelTensor, shape);
        }

        /// <summary>A getter of 1-based keys for a label column of values, matched to the class names by their text.</summary>
        private static ValueGetter<uint> LabelFromValue(DataViewRowCursor cursor, DataViewSchema.Column label, IReadOnlyList<string> classNames, string dataName)
        {
            if (label.Type is VectorDataViewType)
                throw new ArgumentException($"Label column '{label.Name}' of the {dataName} is {label.Type}: it must be a key or a scalar whose text is a class name.");
            var indices = new Dictionary<string, uint>(StringComparer.Ordinal);
            for (int i = 0; i < classNames.Count; i++)
                indices.TryAdd(classNames[i], (uint)(i + 1));
            var method = typeof(ImageDataset).GetMethod(nameof(TextGetter), System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)!
                .MakeGenericMethod(label.Type.RawType);
            var text = (Func<string>)method.Invoke(null, new object[] { cursor, label })!;
            return (ref uint value) =>
            {
                string name = text();
                if (!indices.TryGetValue(name, out value))
                {
                    throw new InvalidOperationException(
                        $"Row {cursor.Position} of the {dataName} has label '{name}', which is not one of the model's classes ({string.Join(", ", classNames)}).");
                }
            };
        }

        private static Func<string> TextGetter<T>(DataViewRowCursor cursor, DataViewSchema.Column column)
        {
            ValueGetter<T> getter = cursor.GetGetter<T>(column);
            T value = default!;
            return () =>
            {
                getter(ref value);
                return Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture) ?? "";
            };
        }

        /// <summary>Per-channel mean and standard deviation over all images.</summary>
        public (float[] Mean, float[] Std) ChannelStatistics()
        {
            using var scope = NewDisposeScope();
            Tensor perChannel = Images.transpose(0, 1).reshape(Shape.Channels, -1);
            float[] mean = perChannel.mean(new long[] { 1 }).data<float>().ToArray();
            float[] std = perChannel.std(1).data<float>().ToArray();
            for (int i = 0; i < std.Length; i++)
                std[i] = std[i] > 1e-6f ? std[i] : 1f;
            return (mean, std);
        }

        public void Dispose()
        {
            Images.Dispose();
            Labels.Dispose();
        }
    }
}
