// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML.Data;
using Microsoft.ML.Model.OnnxConverter;

namespace Microsoft.ML.Pruning.MLNet
{
    /// <summary>
    /// What <see cref="ImageClassificationTransformer.Transform"/> returns: the row-by-row scoring view of ML.NET, whose
    /// cursors score the images in blocks of <see cref="BlockRows"/> instead of one at a time.
    /// </summary>
    /// <remarks>
    /// A cursor that needs the score or the predicted label runs two cursors over the input in step: one, with the
    /// columns the caller asked for, gives every other column of the current row; the other reads only the images, a
    /// block ahead, and scores each block with one call of the network, where batched kernels run many times faster than
    /// one image at a time. This relies on what every <see cref="IDataView"/> promises: two cursors opened without a
    /// random generator see the same rows in the same order. A shuffled cursor is left to the row-by-row view.
    /// <para>To ML.NET's pipeline walks (ONNX export) it is the row-by-row transform it wraps: a data transform over the
    /// input that saves itself and exports itself to ONNX as that one does.</para>
    /// </remarks>
    internal sealed class BlockScoringDataView : IDataView, ITransformCanSaveOnnx
    {
        /// <summary>Images scored per call of the network.</summary>
        public const int BlockRows = 256;

        private readonly ImageClassificationTransformer _owner;
        private readonly IDataView _input;
        private readonly IDataView _rowByRow;
        private readonly int _predictedLabelIndex;
        private readonly int _scoreIndex;

        /// <param name="owner">The transformer that scores.</param>
        /// <param name="input">The data it is applied to.</param>
        /// <param name="rowByRow">ML.NET's row-by-row view of the same transformation; its schema is this view's.</param>
        public BlockScoringDataView(ImageClassificationTransformer owner, IDataView input, IDataView rowByRow)
        {
            _owner = owner;
            _input = input;
            _rowByRow = rowByRow;
            _predictedLabelIndex = rowByRow.Schema[owner.PredictedLabelColumnName].Index;
            _scoreIndex = rowByRow.Schema[owner.ScoreColumnName].Index;
        }

        /// <summary>The data the classifier is applied to.</summary>
        public IDataView Source => _input;

        /// <inheritdoc/>
        public bool CanShuffle => _rowByRow.CanShuffle;

        /// <inheritdoc/>
        public DataViewSchema Schema => _rowByRow.Schema;

        /// <inheritdoc/>
        public long? GetRowCount() => _rowByRow.GetRowCount();

        /// <inheritdoc/>
        public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
        {
            ArgumentNullException.ThrowIfNull(columnsNeeded);
            DataViewSchema.Column[] needed = columnsNeeded.ToArray();
            bool predictedLabel = needed.Any(c => c.Index == _predictedLabelIndex);
            bool score = needed.Any(c => c.Index == _scoreIndex);
            if (rand is not null || (!predictedLabel && !score))
                return _rowByRow.GetRowCursor(needed, rand);

            DataViewSchema.Column[] passedThrough = needed.Where(c => c.Index != _predictedLabelIndex && c.Index != _scoreIndex).ToArray();
            DataViewRowCursor rows = _rowByRow.GetRowCursor(passedThrough);
            DataViewRowCursor images;
            try
            {
                images = _input.GetRowCursor(new[] { _input.Schema[_owner.FeatureColumnName] });
            }
            catch
            {
                rows.Dispose();
                throw;
            }
            return new Cursor(this, rows, images, predictedLabel, score);
        }

        /// <inheritdoc/>
        /// <remarks>One cursor: the blocks are what makes scoring fast, and the network spreads each block over the cores.</remarks>
        public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null)
            => new[] { GetRowCursor(columnsNeeded, rand) };

        /// <summary>Whether the row-by-row transform exports to ONNX (it always does; an untranslatable network throws when saved).</summary>
        public bool CanSaveOnnx(OnnxContext ctx) => _rowByRow is ITransformCanSaveOnnx transform && transform.CanSaveOnnx(ctx);

        /// <summary>Adds the classifier to the ONNX graph being built, as the row-by-row transform does.</summary>
        public void SaveAsOnnx(OnnxContext ctx) => ((ITransformCanSaveOnnx)_rowByRow).SaveAsOnnx(ctx);

        /// <summary>Saves the row-by-row transform (the classifier and how it is applied).</summary>
        public void Save(ModelSaveContext ctx) => ((ICanSaveModel)_rowByRow).Save(ctx);

        private sealed class Cursor : DataViewRowCursor
        {
            private readonly BlockScoringDataView _view;
            private readonly DataViewRowCursor _rows;
            private readonly DataViewRowCursor _images;
            private readonly ValueGetter<VBuffer<float>> _imageGetter;
            private readonly bool _predictedLabelActive;
            private readonly bool _scoreActive;
            private readonly int _imageSize;
            private readonly int _classes;
            private readonly float[] _blockImages;
            private readonly float[] _blockScores;
            private VBuffer<float> _image;
            private int _blockCount;
            private int _indexInBlock = -1;
            private bool _disposed;

            public Cursor(BlockScoringDataView view, DataViewRowCursor rows, DataViewRowCursor images, bool predictedLabel, bool score)
            {
                _view = view;
                _rows = rows;
                _images = images;
                _imageGetter = images.GetGetter<VBuffer<float>>(images.Schema[view._owner.FeatureColumnName]);
                _predictedLabelActive = predictedLabel;
                _scoreActive = score;
                _imageSize = view._owner.Network.Definition.Input.Size;
                _classes = view._owner.Network.Definition.Classes;
                _blockImages = new float[BlockRows * _imageSize];
                _blockScores = new float[BlockRows * _classes];
            }

            public override DataViewSchema Schema => _view.Schema;

            public override long Position => _rows.Position;

            public override long Batch => _rows.Batch;

            public override ValueGetter<DataViewRowId> GetIdGetter() => _rows.GetIdGetter();

            public override bool IsColumnActive(DataViewSchema.Column column)
            {
                if (column.Index == _view._predictedLabelIndex)
                    return _predictedLabelActive;
                if (column.Index == _view._scoreIndex)
                    return _scoreActive;
                return _rows.IsColumnActive(column);
            }

            public override bool MoveNext()
            {
                if (_disposed || !_rows.MoveNext())
                    return false;
                if (++_indexInBlock >= _blockCount)
                    ScoreNextBlock();
                return true;
            }

            /// <summary>Reads and scores the images of the next block, starting at the current row.</summary>
            private void ScoreNextBlock()
            {
                _indexInBlock = 0;
                _blockCount = 0;
                ImageClassificationTransformer owner = _view._owner;
                while (_blockCount < BlockRows && _images.MoveNext())
                {
                    _imageGetter(ref _image);
                    ImageClassificationTransformer.CopyImage(_image, _blockImages.AsSpan(_blockCount * _imageSize, _imageSize), _images.Position, owner);
                    _blockCount++;
                }
                if (_blockCount == 0)
                    throw new InvalidOperationException($"The input data gave a second cursor fewer rows than the first (row {_rows.Position}); a data view must give every cursor the same rows.");
                owner.Network.Predict(_blockImages.AsSpan(0, _blockCount * _imageSize), _blockScores.AsSpan(0, _blockCount * _classes));
            }

            public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
            {
                if (column.Index == _view._scoreIndex)
                {
                    if (!_scoreActive)
                        throw new InvalidOperationException($"Column '{column.Name}' is not active in this cursor.");
                    ValueGetter<VBuffer<float>> score = (ref VBuffer<float> value) =>
                    {
                        var editor = VBufferEditor.Create(ref value, _classes);
                        CurrentScores().CopyTo(editor.Values);
                        value = editor.Commit();
                    };
                    return score as ValueGetter<TValue>
                        ?? throw new InvalidOperationException($"Column '{column.Name}' holds {column.Type}, not {typeof(TValue).Name}.");
                }
                if (column.Index == _view._predictedLabelIndex)
                {
                    if (!_predictedLabelActive)
                        throw new InvalidOperationException($"Column '{column.Name}' is not active in this cursor.");
                    ValueGetter<uint> predicted = (ref uint value) => value = (uint)ImageClassificationTransformer.ArgMax(CurrentScores()) + 1;
                    return predicted as ValueGetter<TValue>
                        ?? throw new InvalidOperationException($"Column '{column.Name}' holds {column.Type}, not {typeof(TValue).Name}.");
                }
                return _rows.GetGetter<TValue>(column);
            }

            private ReadOnlySpan<float> CurrentScores()
            {
                if (_indexInBlock < 0 || _indexInBlock >= _blockCount)
                    throw new InvalidOperationException("The cursor is not on a row.");
                return _blockScores.AsSpan(_indexInBlock * _classes, _classes);
            }

            protected override void Dispose(bool disposing)
            {
                if (_disposed)
                    return;
                if (disposing)
                {
                    _rows.Dispose();
                    _images.Dispose();
                }
                _disposed = true;
                base.Dispose(disposing);
            }
        }
    }
}
