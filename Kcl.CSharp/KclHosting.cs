using Kcl.Core;
using Kcl.Core.Interop;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Kcl;

/// <summary>Runs a processor resolved from a Microsoft.Extensions.Hosting host, with the host's logging.</summary>
/// <example>
/// <code>
/// var builder = Host.CreateApplicationBuilder(args).UseKclChildDefaults();
/// builder.Services.AddSingleton&lt;MyProcessor&gt;();
/// using var host = builder.Build();
/// return await host.RunKclProcessorAsync&lt;MyProcessor&gt;();
/// </code>
/// </example>
public static class KclHosting
{
    /// <summary>
    /// Makes a host fit to be the daemon's child: claims stdout for the protocol now, logs to stderr in the library's
    /// one-line format instead of the console logger, and replaces the console lifetime, which would stop the host on
    /// the Ctrl-C and SIGTERM that a child must ignore.
    /// </summary>
    public static TBuilder UseKclChildDefaults<TBuilder>(this TBuilder builder)
        where TBuilder : IHostApplicationBuilder =>
        ConfigureChild(builder, claimStandardStreams: true);

    /// <summary>Tests run many hosts in one process and must leave its stdout alone.</summary>
    internal static TBuilder ConfigureChild<TBuilder>(TBuilder builder, bool claimStandardStreams)
        where TBuilder : IHostApplicationBuilder
    {
        ArgumentNullException.ThrowIfNull(builder);
        if (claimStandardStreams)
        {
            Runtime.ClaimStandardStreams();
        }

        builder.Logging.ClearProviders();
        var provider = KclLoggerProvider.FromEnvironment(Console.Error);
        builder.Logging.SetMinimumLevel(provider.MinimumLevel).AddProvider(provider);
        builder.Services.AddSingleton<IHostLifetime, ChildLifetime>();
        return builder;
    }

    /// <summary>Starts the host, runs <typeparamref name="TProcessor"/> from its services, and stops it.</summary>
    /// <returns>The process exit code.</returns>
    public static Task<int> RunKclProcessorAsync<TProcessor>(this IHost host)
        where TProcessor : IShardRecordProcessor =>
        host.RunKclProcessorAsync<TProcessor>(KclOptions.Default, CancellationToken.None);

    /// <summary>Starts the host, runs <typeparamref name="TProcessor"/> from its services, and stops it.</summary>
    /// <param name="host">A host built with <see cref="UseKclChildDefaults{TBuilder}"/>.</param>
    /// <param name="options">Run options; the host's logger factory is used unless they name one.</param>
    /// <param name="cancellationToken">Ends the run as if stdin had closed.</param>
    /// <returns>The process exit code.</returns>
    /// <exception cref="InvalidOperationException">The host still has the console lifetime.</exception>
    public static async Task<int> RunKclProcessorAsync<TProcessor>(
        this IHost host, KclOptions options, CancellationToken cancellationToken)
        where TProcessor : IShardRecordProcessor
    {
        ArgumentNullException.ThrowIfNull(host);
        ArgumentNullException.ThrowIfNull(options);
        if (host.Services.GetService<IHostLifetime>() is not ChildLifetime)
        {
            throw new InvalidOperationException(
                "The host's lifetime would stop it on Ctrl-C or SIGTERM, which the daemon's children must ignore; " +
                "build it with UseKclChildDefaults().");
        }

        await host.StartAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var processor = ActivatorUtilities.GetServiceOrCreateInstance<TProcessor>(host.Services);
            var withLogging = options.LoggerFactory is null
                ? options.WithLoggerFactory(host.Services.GetRequiredService<ILoggerFactory>())
                : options;
            return await KclProcess.RunAsync(processor, withLogging, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            await host.StopAsync(CancellationToken.None).ConfigureAwait(false);
        }
    }

    /// <summary>A lifetime that neither listens to signals nor stops the host by itself.</summary>
    private sealed class ChildLifetime : IHostLifetime
    {
        public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
