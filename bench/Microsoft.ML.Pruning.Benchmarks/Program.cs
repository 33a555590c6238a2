// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using Microsoft.ML.Pruning.Benchmarks;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Runtime;

// Benchmarks of Microsoft.ML.Pruning: one subcommand per scenario; each prints a table and writes
// artifacts/bench/<scenario>.json. --quick runs a reduced version in under two minutes.
GlibcMallocTuning.Apply();
if (args.Length == 0 || args[0] is "-h" or "--help")
{
    Console.WriteLine("usage: bench train [--quick] [--models lenet300,lenet5,vgg-small,resnet20]");
    Console.WriteLine("       bench sal [--quick] [--models vgg-small,resnet20] [--methods shift,shift-attention,shift-attention-shared] [--epochs N] [--temperature T_init,T_final] [--fine-tune N] [--train-rows N] [--test-rows N] [--widths 1,1.5,2,3]");
    Console.WriteLine("       bench lobs [--quick] [--models lenet300,lenet5]");
    Console.WriteLine("       bench attentive [--quick] [--models lenet300,lenet5,vgg-small] [--kept 0.1,0.05,0.02] [--methods attentive,magnitude,lobs] [--calibration N] [--score mass|hits|flow|massmagnitude|boostedmagnitude] [--allocation global|uniform] [--layer-budgets magnitude] [--rounds R] [--epochs N] [--retrain-epochs N] [--train-rows N] [--seed S] [--skip-timing]");
    Console.WriteLine("       bench channels [--quick] [--models vgg-small,resnet20] [--targets 2,4] [--criteria l1,bn-scale,random] [--finetune-epochs N] [--round-to N]");
    Console.WriteLine("       bench dcp [--quick] [--models vgg-small,resnet20] [--targets 2] [--criteria dcp,random-dcp,l1,bn-scale,dcp-adapt] [--adapt-epsilon E] [--finetune-epochs N]");
    Console.WriteLine("       bench synaptic [--quick] [--models vgg-small,resnet20] [--pruned 90,95] [--criteria synaptic,kernel-norm] [--sparsity-epochs N] [--lambda L] [--finetune-epochs N] [--allocation uniform|global] [--train-rows N] [--seed S] [--dense-epochs N] [--skip-timing]");
    Console.WriteLine("       bench runtime [--quick] [--models vgg-small,lenet300,fc784x300] [--train-rows N]");
    Console.WriteLine("       bench fuzz [--files N] [--seed S]");
    Console.WriteLine("       bench plan model.zip [other.zip ...] [--batch N]");
    Console.WriteLine("       bench service [--quick] [--model-zips dense.zip,pruned.zip] [--clients N] [--seconds S] [--images N]");
    return args.Length == 0 ? 2 : 0;
}

bool quick = args.Contains("--quick");
switch (args[0])
{
    case "train":
        return TrainScenario.Run(quick, ParseModels(args));
    case "sal":
        return SalScenario.Run(args);
    case "runtime":
        return RuntimeScenario.Run(args);
    case "channels":
        return ChannelsScenario.Run(args);
    case "dcp":
        return ChannelsScenario.Run(args, "dcp");
    case "synaptic":
        return SynapticScenario.Run(args);
    case "lobs":
        return LobsScenario.Run(quick, args.Contains("--models") ? ParseModels(args) : null);
    case "attentive":
        return AttentiveScenario.Run(args);
    case "fuzz":
        return FuzzScenario.Run(args);
    case "service":
        return ServiceScenario.Run(args);
    case "plan":
        return PlanScenario.Run(args);
    case "verify-load":
        return TrainScenario.VerifyLoad(args[1], args[2], int.Parse(args[3], CultureInfo.InvariantCulture));
    default:
        Console.Error.WriteLine($"unknown scenario '{args[0]}'");
        return 2;
}

static IReadOnlyList<ImageClassifierArchitecture> ParseModels(string[] args)
{
    var all = Enum.GetValues<ImageClassifierArchitecture>();
    return BenchArgs.Models(args, string.Join(",", all.Select(Architectures.ShortName)),
        _ => $"unknown model in '{BenchArgs.Option(args, "--models")}'; use lenet300, lenet5, vgg-small, resnet20", all);
}
