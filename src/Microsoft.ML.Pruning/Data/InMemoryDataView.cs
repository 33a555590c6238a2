// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML.Data;

namespace Microsoft.ML.Pruning.Data
{
    /// <summary>
    /// A read-only <see cref="IDataView"/> over rows that are already in memory, each column computing its value
    /// from the row index on demand. Unlike <c>LoadFromEnumerable</c>'s streaming view it knows its row count and
    /// supports shuffled cursors, and it converts values straight into the caller's buffers.
    /// </summary>
    internal sealed class InMemoryDataView : IDataView
    {
        private readonly Column[] _columns;
        private readonly int _rowCount;

        public InMemoryDataView(int rowCount, params Column[] columns)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(rowCount);
            _rowCount = rowCount;
            _columns = columns;
            var builder = new DataViewSchema.Builder();
            foreach (Column column in columns)
                builder.AddColumn(column.Name, column.Type);
            Schema = builder.ToSchema();
        }

        /// <summary>Writes the value of row <paramref name="row"/> into <paramref name="value"/>, reusing its buffers.</summary>
        public delegate void RowGetter<TValue>(int row, ref TValue value);

        public DataViewSchema Schema { get; }

        public bool CanShuffle => true;

        public long? GetRowCount() => _rowCount;

        public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
        {
            ArgumentNullException.ThrowIfNull(columnsNeeded);
            var active = new bool[_columns.Length];
            foreach (DataViewSchema.Column column in columnsNeeded)
                active[CheckColumn(column)] = true;
            return new Cursor(this, active, rand is null ? null : Permutation(_rowCount, rand));
        }

        // One cursor: the rows are cheap to produce, so splitting them across threads would gain little.
        public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null)
            => new[] { GetRowCursor(columnsNeeded, rand) };

        /// <summary>Defines a column whose values have type <typeparamref name="TValue"/> (e.g. <c>VBuffer&lt;float&gt;</c> for a vector).</summary>
        public static Column Create<TValue>(string name, DataViewType type, RowGetter<TValue> getter)
        {
            if (type.RawType != typeof(TValue))
                throw new ArgumentException($"Column '{name}' of type {type} holds {type.RawType}, not {typeof(TValue)}.", nameof(type));
            return new Column<TValue>(name, type, getter);
        }

        private int CheckColumn(DataViewSchema.Column column)
        {
            if (column.Index < 0 || column.Index >= _columns.Length || column.Name != _columns[column.Index].Name)
                throw new ArgumentOutOfRangeException(nameof(column), $"Column '{column.Name}' (index {column.Index}) is not a column of this data view.");
            return column.Index;
        }

        private static int[] Permutation(int count, Random rand)
        {
            int[] order = Enumerable.Range(0, count).ToArray();
            rand.Shuffle(order);
            return order;
        }

        /// <summary>A column: its name, ML.NET type and how to get a row's value.</summary>
        internal abstract class Column
        {
            protected Column(string name, DataViewType type)
            {
                Name = name;
                Type = type;
            }

            public string Name { get; }

            public DataViewType Type { get; }
        }

        private sealed class Column<TValue> : Column
        {
            public Column(string name, DataViewType type, RowGetter<TValue> getter)
                : base(name, type)
            {
                Getter = getter;
            }

            public RowGetter<TValue> Getter { get; }
        }

        private sealed class Cursor : DataViewRowCursor
        {
            private readonly InMemoryDataView _parent;
            private readonly bool[] _active;
            private readonly int[]? _order;
            private long _position = -1;
            private int _row = -1;
            private bool _done;

            public Cursor(InMemoryDataView parent, bool[] active, int[]? order)
            {
                _parent = parent;
                _active = active;
                _order = order;
            }

            public override DataViewSchema Schema => _parent.Schema;

            public override long Position => _position;

            // Batch only matters to consumers merging a cursor set; there is a single cursor.
            public override long Batch => 0;

            public override bool MoveNext()
            {
                if (_done)
                    return false;
                if (_position + 1 >= _parent._rowCount)
                {
                    Finish();
                    return false;
                }
                _position++;
                _row = _order is null ? (int)_position : _order[_position];
                return true;
            }

            public override bool IsColumnActive(DataViewSchema.Column column) => _active[_parent.CheckColumn(column)];

            public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
            {
                int index = _parent.CheckColumn(column);
                if (!_active[index])
                    throw new InvalidOperationException($"Column '{column.Name}' was not requested when this cursor was created.");
                if (_parent._columns[index] is not Column<TValue> source)
                    throw new InvalidOperationException($"Column '{column.Name}' holds {_parent._columns[index].Type.RawType}, not {typeof(TValue)}.");
                RowGetter<TValue> getter = source.Getter;
                return (ref TValue value) => getter(CurrentRow(), ref value);
            }

            // Row ids follow the stored row, so a shuffled cursor reports each row under the same id.
            public override ValueGetter<DataViewRowId> GetIdGetter()
                => (ref DataViewRowId value) => value = new DataViewRowId((ulong)CurrentRow(), 0);

            protected override void Dispose(bool disposing)
            {
                Finish();
                base.Dispose(disposing);
            }

            private void Finish()
            {
                _done = true;
                _position = -1;
                _row = -1;
            }

            private int CurrentRow()
            {
                if (_row < 0)
                    throw new InvalidOperationException("The cursor is not on a row: call MoveNext first and stop once it returns false.");
                return _row;
            }
        }
    }
}
