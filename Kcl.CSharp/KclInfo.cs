namespace Kcl;

/// <summary>Facts about this build of the C# facade.</summary>
public static class KclInfo
{
    /// <summary>The informational version of the facade assembly.</summary>
    public static string Version =>
        typeof(KclInfo).Assembly.GetName().Version?.ToString() ?? "0.0.0";
}
