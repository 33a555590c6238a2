// Licensed under the MIT license.

using System;
using Spectre.Console;

namespace FashionMnistClassifier
{
    /// <summary>
    /// Progress of the long steps: a Spectre.Console progress bar in a terminal, one plain line per update otherwise
    /// (CI logs, output redirected to a file), so that the output stays readable either way.
    /// </summary>
    internal static class Progress
    {
        /// <summary>True when the output is a terminal that can redraw a progress bar.</summary>
        public static bool Interactive { get; } = AnsiConsole.Profile.Capabilities.Interactive && !Console.IsOutputRedirected;

        /// <summary>
        /// Runs <paramref name="body"/>, a step of <paramref name="units"/> known units; each call of the callback it gets
        /// marks one unit done and describes it.
        /// </summary>
        public static T Run<T>(string title, int units, Func<Action<string>, T> body)
        {
            if (!Interactive)
            {
                Console.WriteLine($"{title}...");
                int done = 0;
                return body(description => Console.WriteLine($"  [{++done}/{units}] {description}"));
            }
            return NewProgress().Start(context =>
            {
                ProgressTask task = context.AddTask(Markup.Escape($"{title} (0/{units})"), maxValue: units);
                int done = 0;
                return body(description =>
                {
                    // The finished units stay on screen above the bar, which keeps a short description.
                    AnsiConsole.MarkupLineInterpolated($"[grey]{description}[/]");
                    task.Description = Markup.Escape($"{title} ({++done}/{units})");
                    task.Increment(1);
                });
            });
        }

        /// <summary>
        /// Runs <paramref name="body"/>, a step whose length is not known in advance; the callback it gets names the stage
        /// it is in (an indeterminate bar with the elapsed time, or a line).
        /// </summary>
        public static T Run<T>(string title, Func<Action<string>, T> body)
        {
            if (!Interactive)
            {
                Console.WriteLine($"{title}...");
                return body(stage => Console.WriteLine($"  {stage}"));
            }
            return NewProgress().Start(context =>
            {
                ProgressTask task = context.AddTask(Markup.Escape(title)).IsIndeterminate();
                T result = body(stage => task.Description = Markup.Escape($"{title}: {stage}"));
                task.IsIndeterminate = false;
                task.Value = task.MaxValue;
                task.Description = Markup.Escape(title);
                return result;
            });
        }

        private static Spectre.Console.Progress NewProgress() => AnsiConsole.Progress()
            .AutoClear(false)
            .Columns(
                new TaskDescriptionColumn { Alignment = Justify.Left },
                new ProgressBarColumn(),
                new PercentageColumn(),
                new ElapsedTimeColumn(),
                new SpinnerColumn());
    }
}
