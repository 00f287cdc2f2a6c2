namespace Kcl.Core
