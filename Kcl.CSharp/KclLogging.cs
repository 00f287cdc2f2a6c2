using Kcl.Core;
using Microsoft.Extensions.Logging;

namespace Kcl;

/// <summary>The library's log: one line per entry on stderr, in the format the daemon's log reads well in.</summary>
public static class KclLogging
{
    /// <summary>
    /// A logger factory that writes one line per entry (time, level, shard id, message) to stderr, or to the file named
    /// by <c>KCL_LOG_FILE</c>, at the level named by <c>KCL_LOG_LEVEL</c> (default information).
    /// </summary>
    public static ILoggerFactory CreateFactory() => KclLoggerProvider.FromEnvironment(Console.Error).CreateFactory();
}
