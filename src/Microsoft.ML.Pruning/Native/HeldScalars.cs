// Licensed under the MIT license.

using System;
using System.Collections.Concurrent;
using TorchSharp;

namespace Microsoft.ML.Pruning.Native
{
    /// <summary>
    /// Native scalars that live as long as the process, for the constants the library passes to libtorch.
    /// </summary>
    /// <remarks>
    /// TorchSharp 0.107 turns a number passed where a <see cref="Scalar"/> is expected (<c>t.gt(0)</c>, <c>t * 0.5</c>)
    /// into a new native scalar that no dispose scope tracks and the call does not keep alive: once the call has read its
    /// handle, a garbage collection started by another thread can run the scalar's finalizer and free it while libtorch
    /// still reads it, which crashes the process. Library code therefore passes <c>HeldScalars.Of(constant)</c> for
    /// constants and holds a scalar for a computed value itself (<c>using Scalar s = value.ToScalar();</c>, disposed
    /// after the calls that read it). A test scans the library's IL for implicit conversions.
    /// <para>
    /// Only constants belong here: each distinct value is kept for good, and more than <see cref="Capacity"/> of them
    /// means a computed value was passed by mistake (an <see cref="InvalidOperationException"/>).
    /// </para>
    /// </remarks>
    internal sealed class HeldScalars : IDisposable
    {
        /// <summary>The most distinct constants the process holds; the library uses a few dozen.</summary>
        internal const int Capacity = 256;

        private static readonly HeldScalars s_process = new(Capacity);

        private readonly ConcurrentDictionary<(TypeCode Type, long Bits), Scalar> _held = new();
        private readonly int _capacity;

        /// <summary>A table of its own (the process's is behind <see cref="Of(int)"/> and its overloads).</summary>
        internal HeldScalars(int capacity) => _capacity = capacity;

        /// <summary>The process's held 32-bit integer scalar <paramref name="value"/>.</summary>
        public static Scalar Of(int value) => s_process.Hold(value);

        /// <summary>The process's held 64-bit integer scalar <paramref name="value"/>.</summary>
        public static Scalar Of(long value) => s_process.Hold(value);

        /// <summary>The process's held single-precision scalar <paramref name="value"/>.</summary>
        public static Scalar Of(float value) => s_process.Hold(value);

        /// <summary>The process's held double-precision scalar <paramref name="value"/>.</summary>
        public static Scalar Of(double value) => s_process.Hold(value);

        /// <summary>The process's held Boolean scalar <paramref name="value"/>.</summary>
        public static Scalar Of(bool value) => s_process.Hold(value);

        internal Scalar Hold(int value) => Get((TypeCode.Int32, value), () => value.ToScalar());

        internal Scalar Hold(long value) => Get((TypeCode.Int64, value), () => value.ToScalar());

        internal Scalar Hold(float value) => Get((TypeCode.Single, BitConverter.SingleToInt32Bits(value)), () => value.ToScalar());

        internal Scalar Hold(double value) => Get((TypeCode.Double, BitConverter.DoubleToInt64Bits(value)), () => value.ToScalar());

        internal Scalar Hold(bool value) => Get((TypeCode.Boolean, value ? 1 : 0), () => value.ToScalar());

        /// <summary>Frees the table's scalars (the process's table is never disposed).</summary>
        public void Dispose()
        {
            foreach (Scalar scalar in _held.Values)
                scalar.Dispose();
            _held.Clear();
        }

        private Scalar Get((TypeCode, long) key, Func<Scalar> create)
        {
            if (_held.TryGetValue(key, out Scalar? held))
                return held;
            lock (_held)
            {
                if (_held.TryGetValue(key, out held))
                    return held;
                if (_held.Count >= _capacity)
                    throw new InvalidOperationException(
                        $"More than {_capacity} distinct held scalars: {nameof(HeldScalars)} is for constants; hold a computed value with 'using Scalar s = value.ToScalar()'.");
                held = create();
                _held[key] = held;
                return held;
            }
        }
    }
}
