(*
    Platform --- what differs between Unix and Windows, as data, so the pure parts can be tested for both on either.
*)
namespace Kcl.Bootstrap

open System
open System.Runtime.InteropServices

/// The platform conventions the bootstrap depends on.
type Platform =
    {
        /// True on Windows.
        IsWindows: bool
        /// Separates folders in a path: '/' or '\'.
        DirectorySeparator: char
        /// Separates classpath entries (and PATH entries): ':' or ';'.
        PathListSeparator: char
        /// The Java launcher's file name: "java" or "java.exe".
        JavaExecutable: string
    }

/// The two platforms and path helpers over them.
[<RequireQualifiedAccess>]
module Platform =
    /// Linux, macOS and the other Unix systems.
    let unix =
        {
            IsWindows = false
            DirectorySeparator = '/'
            PathListSeparator = ':'
            JavaExecutable = "java"
        }

    /// Windows.
    let windows =
        {
            IsWindows = true
            DirectorySeparator = '\\'
            PathListSeparator = ';'
            JavaExecutable = "java.exe"
        }

    /// The platform this process runs on.
    let current =
        if RuntimeInformation.IsOSPlatform OSPlatform.Windows then
            windows
        else
            unix

    /// Joins path segments with the platform's separator, without doubling a separator already at a joint.
    let combine (platform: Platform) (segments: string list) =
        let separators = [| '/'; platform.DirectorySeparator |]

        segments
        |> List.filter (String.IsNullOrEmpty >> not)
        |> List.mapi (fun i s -> if i = 0 then s.TrimEnd separators else s.Trim separators)
        |> fun parts -> String.Join(string platform.DirectorySeparator, parts)

    /// The folder part of a path (everything before the last separator), or "." when there is none.
    let directoryOf (platform: Platform) (path: string) =
        let i = path.LastIndexOfAny [| '/'; platform.DirectorySeparator |]

        if i < 0 then "."
        elif i = 0 then path.Substring(0, 1)
        else path.Substring(0, i)

/// Where jars live in the cache, and the classpath built from a manifest.
[<RequireQualifiedAccess>]
module Classpath =
    /// A jar's path in the cache: <cache>/<kcl-version>/<group as folders>/<artifact>/<version>/<artifact>-<version>.jar.
    /// The KCL version keeps releases apart; the Maven layout below it keeps artifacts of equal names apart.
    let jarPath (platform: Platform) (cacheRoot: string) (kclVersion: string) (coordinate: Coordinate) =
        Platform.combine
            platform
            ([ cacheRoot; kclVersion ]
             @ List.ofArray (coordinate.Group.Split '.')
             @ [ coordinate.Artifact; coordinate.Version; Coordinate.fileName coordinate ])

    /// The jars of a manifest in manifest order, never a folder's listing: a stale jar of another version that
    /// happens to sit in the cache is never on the classpath.
    let jars (platform: Platform) (cacheRoot: string) (manifest: Manifest) =
        manifest.Entries
        |> List.map (fun e -> jarPath platform cacheRoot manifest.KclVersion e.Coordinate)

    /// The classpath: the manifest's jars, then the extra entries, then the properties file's folder, which the
    /// daemon needs because it loads the properties file as a classpath resource first (PROTOCOL.md §5.1).
    let build (platform: Platform) (jars: string list) (extras: string list) (propertiesFile: string option) =
        let folder =
            propertiesFile |> Option.map (Platform.directoryOf platform) |> Option.toList

        String.Join(string platform.PathListSeparator, jars @ extras @ folder)
