// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML.Pruning.Native;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using Mono.Cecil;
using Mono.Cecil.Cil;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Tests.Native
{
    [TestClass]
    public sealed class HeldScalarsTests
    {
        [TestMethod]
        public void TheLibraryPassesNoImplicitlyConvertedScalarToLibTorch()
        {
            // An implicitly converted Scalar is freed by its finalizer, possibly while libtorch still reads it: every call
            // site of Scalar's conversion operators, and of TorchSharp operators taking a number (which convert inside),
            // is a place where the process can crash.
            string path = typeof(HeldScalars).Assembly.Location;
            using AssemblyDefinition assembly = AssemblyDefinition.ReadAssembly(path, new ReaderParameters { ReadSymbols = true });
            var sites = new List<string>();
            foreach (TypeDefinition type in assembly.MainModule.GetTypes())
            {
                foreach (MethodDefinition method in type.Methods.Where(m => m.HasBody))
                {
                    foreach (Instruction instruction in method.Body.Instructions)
                    {
                        if (instruction.Operand is not MethodReference called || !called.DeclaringType.FullName.StartsWith("TorchSharp", StringComparison.Ordinal))
                            continue;
                        bool conversion = called.DeclaringType.FullName == "TorchSharp.Scalar" && called.Name == "op_Implicit";
                        bool numericOperator = called.Name.StartsWith("op_", StringComparison.Ordinal) && called.Name != "op_Implicit"
                            && called.Parameters.Any(p => p.ParameterType.IsPrimitive);
                        if (conversion || numericOperator)
                        {
                            SequencePoint? point = method.DebugInformation.HasSequencePoints
                                ? method.Body.Instructions.TakeWhile(i => i != instruction).Append(instruction)
                                    .Select(i => method.DebugInformation.GetSequencePoint(i)).LastOrDefault(p => p is not null)
                                : null;
                            sites.Add($"{type.FullName}::{method.Name} calls {called.DeclaringType.Name}.{called.Name}" +
                                $"({string.Join(", ", called.Parameters.Select(p => p.ParameterType.Name))})" +
                                (point is null ? "" : $" at {System.IO.Path.GetFileName(point.Document.Url)}:{point.StartLine}"));
                        }
                    }
                }
            }
            Assert.AreEqual(0, sites.Count, "Pass HeldScalars.Of(constant) or a scalar held with 'using':\n" + string.Join("\n", sites));
        }

        [TestMethod]
        public void ConstantsAreHeldOncePerTypeAndValue()
        {
            Assert.AreSame(HeldScalars.Of(0), HeldScalars.Of(0));
            Assert.AreSame(HeldScalars.Of(1e-12), HeldScalars.Of(1e-12));
            Assert.AreNotSame(HeldScalars.Of(0), HeldScalars.Of(0L));
            Assert.AreNotSame(HeldScalars.Of(0), HeldScalars.Of(0.0));
            Assert.AreNotSame(HeldScalars.Of(0f), HeldScalars.Of(0.0));
            Assert.AreNotSame(HeldScalars.Of(0.0), HeldScalars.Of(-0.0));
            Assert.AreSame(HeldScalars.Of(float.NaN), HeldScalars.Of(float.NaN));
            // libtorch keeps integers as 64 bits and floating-point numbers as doubles.
            Assert.AreEqual(ScalarType.Int64, HeldScalars.Of(3).Type);
            Assert.AreEqual(ScalarType.Float64, HeldScalars.Of(3f).Type);
            Assert.AreEqual(ScalarType.Bool, HeldScalars.Of(true).Type);
        }

        [TestMethod]
        public void HeldScalarsComputeAsTheNumbersThemselves()
        {
            using var scope = NewDisposeScope();
            Tensor x = tensor(new[] { -1.5f, 0f, 2f, float.NaN });
            CollectionAssert.AreEqual(new[] { false, false, true, false }, x.gt(HeldScalars.Of(0)).data<bool>().ToArray());
            CollectionAssert.AreEqual(new[] { -1f, 0f, 2f, -1f }, x.masked_fill(x.isnan(), HeldScalars.Of(-1)).clamp_min(HeldScalars.Of(-1)).data<float>().ToArray());
            Tensor counts = tensor(new long[] { 7, 8 });
            Assert.AreEqual(ScalarType.Int64, counts.mul(HeldScalars.Of(2)).dtype, "an integer scalar keeps an integer tensor integer");
            CollectionAssert.AreEqual(new long[] { 3, 4 }, counts.div(HeldScalars.Of(2L), rounding_mode: RoundingMode.floor).data<long>().ToArray());
        }

        [TestMethod]
        public void ComputedValuesAreRefusedOnceTheCapacityIsReached()
        {
            // A loop that passed computed values would grow the table without bound.
            using var table = new HeldScalars(capacity: 3);
            Assert.AreSame(table.Hold(0.25), table.Hold(0.25));
            table.Hold(1);
            table.Hold(true);
            Assert.AreSame(table.Hold(1), table.Hold(1), "values already held are still served at capacity");
            var error = Assert.ThrowsExactly<InvalidOperationException>(() => table.Hold(0.5));
            StringAssert.Contains(error.Message, "is for constants");
            StringAssert.Contains(error.Message, "using Scalar");
        }
    }
}
